"""The OpenAI-protocol embedder, run as the real child against a loopback embeddings API."""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker.conftest import make_job, run_worker
from tests.worker.embeddings_api import KEY, EmbeddingsAPI, Fault, embeddings_api, vector_for

SENTENCES = " ".join(f"Sentence {i} tells of tides, currents and the moon." for i in range(120))


@pytest.fixture
def api() -> Iterator[EmbeddingsAPI]:
    with embeddings_api() as server:
        yield server


def openai_env(api: EmbeddingsAPI, **extra: str) -> dict[str, str]:
    env = {
        "INGEST_EMBEDDER": "openai",
        "INGEST_EMBEDDING_MODEL": "test-embed-small",
        "INGEST_EMBEDDING_BASE_URL": api.base_url,
        "INGEST_EMBEDDING_API_KEY": KEY,
        "INGEST_CHUNK_SIZE": "300",
        "INGEST_CHUNK_OVERLAP": "0",
    }
    env.update(extra)
    return env


def stored(db: Path) -> list[tuple[int, str, list[float]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select chunk_index, content, embedding from document_chunks order by chunk_index"
        ).fetchall()
    return [(i, c, json.loads(e)) for i, c, e in rows]


def test_batches_by_count_and_reports_usage_and_progress(
    api: EmbeddingsAPI, workdir: Path, tmp_path: Path
) -> None:
    db = tmp_path / "chunks.sqlite3"
    env = openai_env(api, INGEST_EMBEDDING_BATCH_SIZE="5", INGEST_CHUNK_SQLITE_PATH=str(db))
    out = run_worker(make_job({"type": "text", "text": SENTENCES}), workdir, **env)
    assert out.code == 0, out.stderr
    rows = stored(db)
    n = len(rows)
    assert n > 15
    # Each chunk got the vector of its own text, in order.
    assert all(vec == vector_for(content, 16) for _, content, vec in rows)
    reqs = api.requests
    assert len(reqs) == math.ceil(n / 5)
    sent = [text for r in reqs for text in (r.body or {})["input"]]
    assert sent == [content for _, content, _ in rows]
    for r in reqs:
        assert r.headers["authorization"] == f"Bearer {KEY}"
        assert r.headers["content-type"] == "application/json"
        assert r.body is not None
        assert r.body["model"] == "test-embed-small" and r.body["encoding_format"] == "float"
        assert "dimensions" not in r.body and 1 <= len(r.body["input"]) <= 5
    tokens = sum(len(t.split()) for t in sent)
    assert out.result["embedding"] == {
        "embedder": "openai",
        "model": "test-embed-small",
        "endpoint": api.base_url + "/embeddings",
        "dimensions": 16,
        "requests": len(reqs),
        "retries": 0,
        "prompt_tokens": tokens,
        "total_tokens": tokens,
    }
    assert out.result["embedder"] == "openai:test-embed-small"
    # One progress line per request, in proportion to the chunks embedded.
    embedded = [(p, m) for p, m in out.progress if m.startswith("embedded ")]
    assert len(embedded) == len(reqs)
    for pct, msg in embedded:
        done = int(msg.split()[1].split("/")[0])
        assert pct == int(50 + 35 * done / n)
    assert KEY not in out.stdout and KEY not in out.stderr


def test_token_budget_bounds_each_request(api: EmbeddingsAPI, workdir: Path) -> None:
    env = openai_env(api, INGEST_EMBEDDING_BATCH_TOKENS="1000")
    out = run_worker(make_job({"type": "text", "text": SENTENCES}), workdir, **env)
    assert out.code == 0, out.stderr
    sizes = [sum(len(t.encode()) for t in (r.body or {})["input"]) for r in api.requests]
    assert len(sizes) > 1 and max(sizes) <= 1000
    assert sum(len((r.body or {})["input"]) for r in api.requests) == out.result["chunks"]


def test_dimensions_are_sent_and_checked(api: EmbeddingsAPI, workdir: Path) -> None:
    job = make_job({"type": "text", "text": "short text about tides"})
    out = run_worker(job, workdir, **openai_env(api, INGEST_EMBEDDING_DIM="8"))
    assert out.code == 0, out.stderr
    assert api.requests[-1].body is not None and api.requests[-1].body["dimensions"] == 8
    assert out.result["embedding"]["dimensions"] == 8
    # A model that does not take `dimensions`: the API says 400, the worker names the settings.
    fixed = run_worker(
        job, workdir, **openai_env(api, INGEST_EMBEDDING_DIM="8",
                                   INGEST_EMBEDDING_MODEL="test-embed-fixed")
    )  # fmt: skip
    assert fixed.code == 78, fixed.stderr
    assert "INGEST_EMBEDDING_DIM" in fixed.stderr and "does not support" in fixed.stderr


@pytest.mark.parametrize("mode", ["split", "truncate"])
def test_over_long_inputs_are_split_or_truncated_never_failed(
    api: EmbeddingsAPI, workdir: Path, mode: str
) -> None:
    text = " ".join(f"w{i}" for i in range(700))  # one chunk, 700 server tokens, 3490 bytes
    env = openai_env(
        api, INGEST_EMBEDDING_MODEL="test-embed-fixed", INGEST_CHUNK_SIZE="100000",
        INGEST_EMBEDDING_MAX_INPUT_TOKENS="1500", INGEST_EMBEDDING_LONG_INPUT=mode,
    )  # fmt: skip
    out = run_worker(make_job({"type": "text", "text": text}), workdir, **env)
    assert out.code == 0, out.stderr
    emb = out.result["embedding"]
    assert emb["adjusted"] == 1
    (item,) = emb["adjusted_items"]
    assert item["chunk_index"] == 0 and "INGEST_EMBEDDING_MAX_INPUT_TOKENS=1500" in item["reason"]
    sent = [t for r in api.requests for t in (r.body or {})["input"]]
    assert all(len(t.encode()) <= 1500 for t in sent)
    if mode == "split":
        assert out.result["chunks"] == len(sent) == 3 and "split into 3" in item["reason"]
        assert " ".join(sent).split() == text.split(), "split pieces cover the text"
    else:
        assert out.result["chunks"] == len(sent) == 1 and "first 1500 bytes" in item["reason"]
        assert text.startswith(sent[0])
    # Without a limit low enough, the server refuses the input: configuration, naming it.
    env["INGEST_EMBEDDING_MAX_INPUT_TOKENS"] = "8191"
    refused = run_worker(make_job({"type": "text", "text": text}), workdir, **env)
    assert refused.code == 78 and "INGEST_EMBEDDING_MAX_INPUT_TOKENS" in refused.stderr


def test_429_and_503_retry_after_is_honoured(api: EmbeddingsAPI, workdir: Path) -> None:
    api.script = [
        Fault(429, {"Retry-After": "1"}),
        Fault(503, {"Retry-After": "1"}),
        Fault(429, {"retry-after-ms": "300"}),
    ]
    out = run_worker(make_job({"type": "text", "text": "a few words"}), workdir, **openai_env(api))
    assert out.code == 0, out.stderr
    at = [r.at for r in api.requests]
    assert [r.status for r in api.requests] == [429, 503, 429, 200]
    assert at[1] - at[0] >= 0.95 and at[2] - at[1] >= 0.95 and at[3] - at[2] >= 0.28
    assert out.result["embedding"]["requests"] == 4 and out.result["embedding"]["retries"] == 3
    waits = [m for _, m in out.progress if "retrying" in m]
    assert len(waits) == 3 and "HTTP 429" in waits[0] and "HTTP 503" in waits[1]


def test_500s_back_off_with_jitter_then_exit_75(api: EmbeddingsAPI, workdir: Path) -> None:
    api.script = [Fault(500) for _ in range(50)]
    env = openai_env(api, INGEST_EMBEDDING_RETRY_SECONDS="4")
    started = time.monotonic()
    out = run_worker(make_job({"type": "text", "text": "a few words"}), workdir, **env)
    elapsed = time.monotonic() - started
    assert out.code == 75, out.stderr
    assert "HTTP 500" in out.stderr and "INGEST_EMBEDDING_RETRY_SECONDS=4" in out.stderr
    assert "RESULT:" not in out.stdout and "Traceback" not in out.stderr
    at = [r.at for r in api.requests]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    # The first three waits take at most 0.5 + 1 + 2 s, inside the 4 s budget: 3 gaps or more.
    assert len(gaps) >= 3
    # Attempt k waits between half and all of 0.5 s x 2^k.
    for k, gap in enumerate(gaps):
        assert gap >= 0.5 * 0.5 * 2**k * 0.95, gaps
    assert elapsed < 4 + 5


def test_retry_after_beyond_the_budget_gives_up_at_once(api: EmbeddingsAPI, workdir: Path) -> None:
    api.script = [Fault(429, {"Retry-After": "120"})]
    env = openai_env(api, INGEST_EMBEDDING_RETRY_SECONDS="10")
    started = time.monotonic()
    out = run_worker(make_job({"type": "text", "text": "a few words"}), workdir, **env)
    assert out.code == 75 and "server asked to wait 120s" in out.stderr
    assert time.monotonic() - started < 8 and len(api.requests) == 1


def test_a_hung_connection_is_bounded_by_the_deadline(api: EmbeddingsAPI, workdir: Path) -> None:
    api.script = [Fault(hang=True) for _ in range(10)]
    # The budget outlasts a deadline (0.5 s) plus the first backoff (up to 0.5 s) with room
    # to spare on a busy machine, so a second request is always made.
    env = openai_env(api, INGEST_EMBEDDING_TIMEOUT="0.5", INGEST_EMBEDDING_RETRY_SECONDS="2")
    started = time.monotonic()
    out = run_worker(make_job({"type": "text", "text": "a few words"}), workdir, **env)
    elapsed = time.monotonic() - started
    assert out.code == 75, out.stderr
    assert "no complete response within 0.5s" in out.stderr
    assert 2 <= len(api.requests) <= 4
    assert elapsed < 6


def test_a_trickling_response_is_cut_at_the_deadline(api: EmbeddingsAPI, workdir: Path) -> None:
    """Headers, then a byte of body every 0.2 s: per-read timeouts alone would wait for ever."""
    api.script = [Fault(trickle_s=0.2)]
    env = openai_env(api, INGEST_EMBEDDING_TIMEOUT="1", INGEST_EMBEDDING_RETRY_SECONDS="0")
    started = time.monotonic()
    out = run_worker(make_job({"type": "text", "text": "a few words"}), workdir, **env)
    assert out.code == 75 and "no complete response within 1s" in out.stderr, out.stderr
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault(wrong_count=True), "5 vectors came back for 6 inputs"),
        (Fault(wrong_size=True), "vectors of 16 and 15 dimensions"),
        (Fault(200, {}, b"<html>captive portal</html>"), "the response is not JSON"),
        # More than six vectors of any model's size: not read, let alone parsed.
        (
            Fault(200, {}, b'{"data": [{"index": 0, "embedding": [' + b"0," * 3_000_000 + b"0]}]}"),
            "the response is larger than",
        ),
    ],
)
def test_a_response_breaking_the_protocol_fails_clearly(
    api: EmbeddingsAPI, workdir: Path, fault: Fault, message: str
) -> None:
    api.script = [fault]
    text = " ".join(f"word{i}" for i in range(200))  # 6 chunks of at most 300 characters
    out = run_worker(make_job({"type": "text", "text": text}), workdir, **openai_env(api))
    assert out.code == 78, out.stderr
    assert message in out.stderr and "INGEST_EMBEDDING_BASE_URL" in out.stderr
    assert "RESULT:" not in out.stdout


def test_bad_key_missing_key_bad_model_and_bad_url_exit_78(
    api: EmbeddingsAPI, workdir: Path
) -> None:
    job = make_job({"type": "text", "text": "a few words"})
    wrong = "sk-wrong-key-9876543210zyxw"
    bad = run_worker(job, workdir, **openai_env(api, INGEST_EMBEDDING_API_KEY=wrong))
    assert bad.code == 78 and "INGEST_EMBEDDING_API_KEY" in bad.stderr and "refused" in bad.stderr
    for text in (bad.stderr, bad.stdout):
        assert wrong not in text and wrong[-4:] not in text, "not even the masked echo"
    env = openai_env(api)
    del env["INGEST_EMBEDDING_API_KEY"]
    none = run_worker(job, workdir, **env)
    assert none.code == 78 and "a key is required" in none.stderr
    model = run_worker(job, workdir, **openai_env(api, INGEST_EMBEDDING_MODEL="no-such-model"))
    assert model.code == 78 and "INGEST_EMBEDDING_MODEL ('no-such-model')" in model.stderr
    assert "does not exist" in model.stderr
    url = run_worker(job, workdir, **openai_env(api, INGEST_EMBEDDING_BASE_URL=api.base_url + "x"))
    assert url.code == 78 and "INGEST_EMBEDDING_BASE_URL" in url.stderr
    down = run_worker(
        job, workdir, **openai_env(api, INGEST_EMBEDDING_BASE_URL="http://127.0.0.1:1/v1",
                                   INGEST_EMBEDDING_RETRY_SECONDS="0")
    )  # fmt: skip
    assert down.code == 75 and "network error" in down.stderr
    for name, value in [
        ("INGEST_EMBEDDING_BASE_URL", "ftp://example/v1"),
        ("INGEST_EMBEDDING_BATCH_SIZE", "0"),
        ("INGEST_EMBEDDING_LONG_INPUT", "drop"),
        ("INGEST_EMBEDDING_API_KEY", "two words"),
    ]:
        out = run_worker(job, workdir, **openai_env(api, **{name: value}))
        assert out.code == 78 and name in out.stderr, (name, out.stderr)
        assert "two words" not in out.stderr


def test_api_key_from_a_file_or_a_systemd_credential(
    api: EmbeddingsAPI, workdir: Path, tmp_path: Path
) -> None:
    job = make_job({"type": "text", "text": "a few words"})
    env = openai_env(api)
    del env["INGEST_EMBEDDING_API_KEY"]
    keyfile = tmp_path / "key"
    keyfile.write_text(KEY + "\n")
    assert run_worker(job, workdir, **env, INGEST_EMBEDDING_API_KEY_FILE=str(keyfile)).code == 0
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "ingest-embedding-api-key").write_text(KEY)
    assert run_worker(job, workdir, **env, CREDENTIALS_DIRECTORY=str(creds)).code == 0
    assert [r.headers["authorization"] for r in api.requests] == [f"Bearer {KEY}"] * 2
    missing = run_worker(job, workdir, **env, INGEST_EMBEDDING_API_KEY_FILE=str(tmp_path / "no"))
    assert missing.code == 78 and "INGEST_EMBEDDING_API_KEY_FILE" in missing.stderr
    both = run_worker(
        job, workdir, **env, INGEST_EMBEDDING_API_KEY=KEY,
        INGEST_EMBEDDING_API_KEY_FILE=str(keyfile),
    )  # fmt: skip
    assert both.code == 78 and "keep one" in both.stderr and KEY not in both.stderr


def test_the_http_embedder_loads_no_third_party_package(api: EmbeddingsAPI, workdir: Path) -> None:
    import subprocess
    import sys

    from tests.worker.conftest import child_env

    proc = subprocess.run(
        [sys.executable, "-I", "-X", "importtime", "-m", "ingest_worker"],
        input=json.dumps(make_job({"type": "text", "text": "a few words"})).encode(),
        capture_output=True, cwd=workdir, env=child_env(**openai_env(api)), check=True,
    )  # fmt: skip
    loaded = {
        line.rsplit("|", 1)[-1].strip()
        for line in proc.stderr.decode().splitlines()
        if line.startswith("import time:")
    }
    assert "http.client" in loaded
    assert not loaded & {"openai", "httpx", "pydantic", "requests", "urllib3"}


def test_an_error_body_nested_too_deep_is_quoted_not_a_crash(
    api: EmbeddingsAPI, workdir: Path
) -> None:
    api.script = [Fault(400, {}, b"[" * 3000)]
    out = run_worker(make_job({"type": "text", "text": "a few words"}), workdir, **openai_env(api))
    assert out.code == 78, out.stderr[-500:]
    assert "Traceback" not in out.stderr and "HTTP 400" in out.stderr
