"""Embedding through the OpenAI protocol: batched requests vs one chunk per request, same run.

    .venv/bin/python bench/bench_embeddings.py [--chunks 200] [--latency-ms 50] [--rounds 3]
    .venv/bin/python bench/bench_embeddings.py --openai-python /tmp/venv-with-openai/bin/python

Runs the real child (`python -I -m ingest_worker`) on one text document that chunks into
`--chunks` chunks, embedding through the loopback embeddings API of the tests
(tests/worker/embeddings_api.py) with a fixed latency per request. Contenders alternate in
rounds so the machine's load falls on both alike. Prints, per contender, the median wall
time of the whole job, the requests made and the tokens the API reported.

With --openai-python, also prints what importing the `openai` package adds to an
interpreter's start next to the standard-library modules the worker's embedder imports.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.worker.embeddings_api import KEY, embeddings_api  # noqa: E402


def document(chunks: int) -> str:
    """`chunks` paragraphs of 480 characters: with chunk size 500 and no overlap, one chunk each."""
    paragraphs = []
    for i in range(chunks):
        words = f"Paragraph {i} about tides, currents and harbour charts."
        text = (words + " ") * (480 // (len(words) + 1) + 1)
        paragraphs.append(text[:480].rstrip().ljust(480, "."))
    return "\n\n".join(paragraphs)


def run_job(text: str, base_url: str, batch_size: int, cwd: str) -> tuple[float, dict[str, object]]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "INGEST_JOB_ID": "bench",
        "INGEST_ATTEMPT": "1",
        "INGEST_EMBEDDER": "openai",
        "INGEST_EMBEDDING_MODEL": "test-embed-small",
        "INGEST_EMBEDDING_BASE_URL": base_url,
        "INGEST_EMBEDDING_API_KEY": KEY,
        "INGEST_EMBEDDING_BATCH_SIZE": str(batch_size),
        "INGEST_CHUNK_SIZE": "500",
        "INGEST_CHUNK_OVERLAP": "0",
    }
    job = {"job_id": "bench", "tenant_id": "t", "data_source": {"type": "text", "text": text}}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-I", "-m", "ingest_worker"],
        input=json.dumps(job).encode(),
        capture_output=True,
        env=env,
        cwd=cwd,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"worker exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    line = next(ln for ln in proc.stdout.decode().splitlines() if ln.startswith("RESULT: "))
    result: dict[str, object] = json.loads(line[len("RESULT: ") :])
    return elapsed, result


def import_cost(python: str, code: str, runs: int = 7) -> float:
    """Best-of-`runs` milliseconds that `code` adds to a bare `python -I -c pass`."""

    def best(snippet: str) -> float:
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run([python, "-I", "-c", snippet], check=True)
            times.append(time.perf_counter() - t)
        return min(times)

    return (best(code) - best("pass")) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="the batched contender's size")
    ap.add_argument("--openai-python", help="an interpreter with the openai package installed")
    args = ap.parse_args()

    text = document(args.chunks)
    contenders = {f"batched ({args.batch_size}/request)": args.batch_size, "one per request": 1}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    results: dict[str, dict[str, object]] = {}
    latency_s = args.latency_ms / 1000
    with embeddings_api(latency_s=latency_s) as api, tempfile.TemporaryDirectory() as d:
        for _ in range(args.rounds):
            for name, size in contenders.items():
                elapsed, result = run_job(text, api.base_url, size, d)
                if result["chunks"] != args.chunks:
                    raise SystemExit(f"expected {args.chunks} chunks, got {result['chunks']}")
                times[name].append(elapsed)
                results[name] = result
    load = os.getloadavg()[0]
    print(
        f"{args.chunks} chunks, {args.latency_ms:g} ms per request, median of {args.rounds} "
        f"rounds, load {load:.2f}"
    )
    print(f"{'contender':<24}{'job wall s':>12}{'requests':>10}{'tokens':>9}{'chunks/s':>10}")
    for name in contenders:
        wall = statistics.median(times[name])
        emb = results[name]["embedding"]
        assert isinstance(emb, dict)
        print(
            f"{name:<24}{wall:>12.2f}{emb['requests']:>10}{emb['total_tokens']:>9}"
            f"{args.chunks / wall:>10.0f}"
        )
    if args.openai_python:
        stdlib = import_cost(sys.executable, "import http.client, json, ssl, threading")
        sdk = import_cost(args.openai_python, "import openai")
        print(f"start-up added by imports: stdlib http {stdlib:.0f} ms, openai {sdk:.0f} ms")


if __name__ == "__main__":
    main()
