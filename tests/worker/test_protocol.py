"""The child protocol for `text` jobs and bad input: PROGRESS, RESULT, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.worker.conftest import child_env, make_job, run_worker

TEXT = " ".join(f"word{i}" for i in range(600))


def test_text_job_progresses_and_reports_counts(workdir: Path) -> None:
    out = run_worker(make_job({"type": "text", "text": TEXT}), workdir, INGEST_CHUNK_SIZE="500")
    assert out.code == 0, out.stderr
    pcts = [p for p, _ in out.progress]
    assert pcts == sorted(pcts) and pcts[0] <= 5 and pcts[-1] == 100
    assert len(set(pcts)) >= 6, "progress should move through every stage"
    assert all(msg for _, msg in out.progress)
    stages = " ".join(msg for _, msg in out.progress)
    for word in ("reading", "extracted", "split", "embedded", "stor"):
        assert word in stages
    result = out.result
    assert result["pages"] == 1 and result["bytes"] == len(TEXT)
    assert result["chunks"] >= len(TEXT) // 500
    assert result["store"] == "none" and result["embedder"] == "hash-384"
    assert result["skipped"] == 0
    assert out.stdout.rstrip().splitlines()[-1].startswith("RESULT: ")


def _imports(args: list[str], stdin: bytes, cwd: Path) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-I", "-X", "importtime", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=child_env(),
        check=True,
    )
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.decode().splitlines()
        if line.startswith("import time:")
    }


def test_start_up_imports_only_what_a_text_job_needs(workdir: Path) -> None:
    job = json.dumps(make_job({"type": "text", "text": "hello"})).encode()
    # What the interpreter loads anyway (site, .pth hooks) is not the worker's doing.
    baseline = _imports(["-c", "pass"], b"", workdir)
    added = _imports(["-m", "ingest_worker"], job, workdir) - baseline
    forbidden = {
        "redis", "supabase", "langfuse", "psycopg", "supervisor", "sqlite3", "typing",
        "dataclasses", "http.client", "urllib.request", "html.parser", "ssl", "socket",
        "pypdf", "sentence_transformers", "asyncio", "logging",
    }  # fmt: skip
    assert not (added & forbidden), sorted(added & forbidden)
    print(f"\nmodules a text job adds to a bare interpreter: {sorted(added)}")


def test_time_to_first_progress_line(workdir: Path) -> None:
    """Reported, not asserted: how soon a tiny text job shows progress and finishes."""
    job = json.dumps(make_job({"type": "text", "text": "hello world"})).encode()
    firsts, totals = [], []
    for _ in range(5):
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "ingest_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=workdir,
            env=child_env(),
        )
        assert proc.stdin and proc.stdout
        proc.stdin.write(job)
        proc.stdin.close()
        first = proc.stdout.readline()
        firsts.append(time.perf_counter() - start)
        proc.stdout.read()
        assert proc.wait() == 0 and first.startswith(b"PROGRESS: ")
        totals.append(time.perf_counter() - start)
    print(
        f"\ntiny text job: first PROGRESS after {min(firsts) * 1000:.1f} ms (best of 5), "
        f"exit after {min(totals) * 1000:.1f} ms"
    )


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (b"", "no job on stdin"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps(make_job({"type": "ftp"})).encode(), "data_source.type"),
        (json.dumps(make_job({"type": "text"})).encode(), "data_source.text"),
        (json.dumps(make_job({"type": "text", "text": "   "})).encode(), "no text to ingest"),
        (json.dumps({"job_id": "j", "data_source": {"type": "text"}}).encode(), "tenant_id"),
        (json.dumps(make_job({"type": "url"})).encode(), "data_source.url"),
        (json.dumps(make_job({"type": "url", "url": "ftp://x/y"})).encode(), "only http"),
        (json.dumps(make_job({"type": "crawl"})).encode(), "data_source.urls"),
        (json.dumps(make_job({"type": "crawl", "urls": ["file:///etc/x"]})).encode(), "http"),
        (json.dumps(make_job({"type": "file", "path": "a.txt"})).encode(), "INGEST_FILE_ROOT"),
    ],
)
def test_bad_input_exits_65_with_a_clear_message(workdir: Path, stdin: bytes, message: str) -> None:
    out = run_worker(stdin, workdir)
    assert out.code == 65, (out.code, out.stderr)
    assert message in out.stderr
    assert "RESULT:" not in out.stdout
    assert "Traceback" not in out.stderr


def test_bad_configuration_exits_78_naming_the_variable(workdir: Path) -> None:
    out = run_worker(
        make_job({"type": "text", "text": "x"}), workdir, INGEST_CHUNK_SIZE="100",
        INGEST_CHUNK_OVERLAP="100",
    )  # fmt: skip
    assert out.code == 78 and "INGEST_CHUNK_OVERLAP" in out.stderr
    for name, value in [
        ("INGEST_CHUNK_SQLITE_PATH", "relative.sqlite3"),
        ("INGEST_CHUNK_STORE", "mongodb"),
        ("INGEST_FETCH_TIMEOUT", "soon"),
        ("INGEST_CRAWL_ALLOW_PRIVATE", "maybe"),
    ]:
        out = run_worker(make_job({"type": "text", "text": "x"}), workdir, **{name: value})
        assert out.code == 78 and name in out.stderr, (name, out.stderr)
    out = run_worker(
        make_job({"type": "text", "text": "x"}), workdir, INGEST_CHUNK_STORE="postgres"
    )
    assert out.code == 78 and "INGEST_CHUNK_DSN" in out.stderr


def test_secrets_never_reach_stderr_or_result(workdir: Path) -> None:
    secret = "tok-SECRET-123456"
    job = make_job(
        {"type": "url", "url": f"gopher://h/{secret}", "trial_token": secret},
        metadata={"trial_token": secret},
    )
    out = run_worker(job, workdir)
    assert out.code == 65
    assert secret not in out.stderr and secret not in out.stdout
    ok = run_worker(
        make_job({"type": "text", "text": "hi", "trial_token": secret}, metadata={"k": 1}),
        workdir,
    )
    assert ok.code == 0 and secret not in ok.stdout
