"""What the status table costs: jobs/s with the postgres status store on vs `none`, and the
projection lag (a job settled in Redis -> its row visible in PostgreSQL), in one run.

    .venv/bin/python bench/bench_status.py                 # 3 rounds of 1000 jobs each
    .venv/bin/python bench/bench_status.py --jobs 300 --rounds 1

Each round runs one real `python -m supervisor` (2 slots, a trivial child printing PROGRESS
0..100 by 10, metrics and tracing off) per contender on its own queue, one after the other:
`none` and `postgres` (a throwaway database with the shipped migrations on the local
PostgreSQL), alternating which goes first. All jobs are enqueued at once; jobs/s is first
enqueue to last finish in Redis. The lag of a job is its row's `updated_at` (PostgreSQL's
clock, when the final row was written) minus its `finished_at` in Redis (the Redis server's
clock); both servers run on
this machine, so the clocks agree. Outbox bytes per entry come from Redis's MEMORY USAGE of
the stream before it is trimmed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from redis.asyncio import Redis

from supervisor.config import DEFAULT_REDIS_URL
from supervisor.queue.jobqueue import JobQueue

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.status.supabase_stubs import prepare_database  # noqa: E402

CHILD = (
    "import sys\n"
    "sys.stdin.buffer.read()\n"
    "for p in range(0, 101, 10):\n"
    "    print(f'PROGRESS: {p} step', flush=True)\n"
)
ADMIN_DSN = os.environ.get("INGEST_TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/test")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_daemon(redis_url: str, queue: str, backend: str, dsn: str, child: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "SUPABASE_"))}
    env.update(
        REDIS_URL=redis_url,
        INGEST_QUEUE=queue,
        INGEST_CONCURRENCY="2",
        INGEST_STATUS_BACKEND=backend,
        INGEST_STATUS_DSN=dsn,
        INGEST_METRICS_PORT="0",
        INGEST_LOG_LEVEL="WARNING",
        INGEST_WORKER_COMMAND=f"{sys.executable} -S -I {child}",
    )
    return subprocess.Popen([sys.executable, "-m", "supervisor"], env=env, cwd=ROOT)


async def wait_all_final(q: JobQueue, n: int, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (await q.counts())["completed"] < n:
        if time.monotonic() > deadline:
            raise RuntimeError("jobs did not finish in time")
        await asyncio.sleep(0.01)


async def round_of(
    backend: str, redis_url: str, dsn: str, child: Path, jobs: int
) -> tuple[float, list[float], float | None]:
    """(jobs/s, lags in s (postgres only), outbox bytes per entry)."""
    queue = f"bench-status-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(redis_url)
    q = JobQueue(client, queue)
    daemon = start_daemon(redis_url, queue, backend, dsn, child)
    try:
        await asyncio.sleep(1.0)  # the daemon's start-up is not what is measured
        payloads = [
            {
                "job_id": f"j{i:05d}",
                "tenant_id": "bench",
                "data_source": {"type": "text", "text": "x"},
            }
            for i in range(jobs)
        ]
        started = time.monotonic()
        await q.enqueue_many(payloads)
        entry_bytes = None
        stream = q.keys.status_outbox
        length = int(await client.xlen(stream))
        if length:
            usage = await client.memory_usage(stream, samples=0)
            entry_bytes = (usage or 0) / length
        await wait_all_final(q, jobs)
        rate = jobs / (time.monotonic() - started)
        lags: list[float] = []
        if backend == "postgres":
            finished = {
                j.job_id: j.finished_at for j in (await q.list_jobs("completed", limit=1000))[0]
            }
            ids = list(finished)
            deadline = time.monotonic() + 60
            while True:
                with psycopg.connect(dsn) as conn:
                    rows = conn.execute(
                        "select job_id, extract(epoch from updated_at) from ingestion_jobs"
                        " where status = 'completed' and job_id = any(%s)",
                        [ids],
                    ).fetchall()
                if len(rows) == len(ids) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            lags = [float(at) - (finished[job] or 0) for job, at in rows]
        return rate, lags, entry_bytes
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        keys = [k async for k in client.scan_iter(match=f"ingest:{{{queue}}}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    name = f"bench_status_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    dsn = f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    prepare_database(dsn)
    print(f"load average: {os.getloadavg()[0]:.2f}; {args.jobs} jobs per round, 2 slots")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            child = Path(tmp) / "child.py"
            child.write_text(CHILD)
            rates: dict[str, list[float]] = {"none": [], "postgres": []}
            lags: list[float] = []
            sizes: list[float] = []
            for r in range(args.rounds):
                # Alternate who goes first: the machine's load drifts within a round.
                order = ("none", "postgres") if r % 2 == 0 else ("postgres", "none")
                for backend in order:
                    rate, lag, size = await round_of(
                        backend, args.redis_url, dsn, child, args.jobs
                    )
                    rates[backend].append(rate)
                    lags += lag
                    if size:
                        sizes.append(size)
                    print(f"  round {r + 1} {backend:>8}: {rate:7.1f} jobs/s")
            none, pg = statistics.median(rates["none"]), statistics.median(rates["postgres"])
            print(f"jobs/s median: none {none:.1f}, postgres {pg:.1f} ({pg / none:.1%} of none)")
            if lags:
                print(
                    f"projection lag (Redis settle -> row): p50 {pct(lags, 0.5) * 1000:.0f} ms,"
                    f" p99 {pct(lags, 0.99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"
                    f" over {len(lags)} jobs"
                )
            if sizes:
                print(f"outbox: {statistics.median(sizes):.0f} bytes per entry in Redis")
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


if __name__ == "__main__":
    asyncio.run(main())
