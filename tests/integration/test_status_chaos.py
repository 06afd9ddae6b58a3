"""Issue 13's chaos test: the status table converges to Redis's truth after crashes.

Three daemons (2 slots each, postgres status backend behind a loopback TCP proxy) run 300
short jobs, enqueued in waves, while faults hit at seeded random times: SIGKILLs of a daemon
(each replaced), a graceful restart of a private redis-server with AOF, and an outage of
the status store (the proxy drops every connection and refuses new ones). One SIGKILL
always lands inside the outage, when a daemon holds the most changes the table has not yet
seen. Afterwards every job is completed in Redis, every row in `ingestion_jobs` is final
and equal to Redis (status, progress, attempt) within a bound, no child process of these
jobs is left, and every daemon exits 0 on SIGTERM.

Set CHAOS_SEED to replay one schedule; the seed of each run is printed.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from supervisor.queue.states import JobState
from tests.daemon.conftest import DaemonProcess, SyncQueue, read_runs, wait_until
from tests.integration.conftest import EXIT_BOUND_S, with_queue
from tests.redis_server import PrivateRedis
from tests.status.tcp_proxy import TcpProxy

JOBS = 300
DAEMONS = 3
WAVES = 12
WINDOW_S = 24.0  # the faults happen within this many seconds of the first enqueue
OUTAGE_S = 5.0
KILLS = 4  # SIGKILLs of a daemon, one of them inside the status store outage
REDIS_DONE_S = 60.0  # after the faults: every job completed in Redis within this
ROWS_FINAL_S = 60.0  # then: every row final and equal to Redis within this
NO_CHILDREN_S = 10.0

DAEMON_ENV = {
    "INGEST_STATUS_BACKEND": "postgres",
    "INGEST_CONCURRENCY": "2",
    "INGEST_LEASE_SECONDS": "3",  # a killed daemon's jobs come back quickly
    "INGEST_STALL_LIMIT": "100",  # random kills may stall one job often: still no dead letter
}


@dataclass(order=True)
class Fault:
    """One step of the schedule: at `at` seconds, do `kind` (enqueue a wave, kill a
    daemon, restart Redis, cut or restore the status store)."""

    at: float
    kind: str
    wave: list[dict[str, Any]] = field(default_factory=list, compare=False)


def payloads(prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "job_id": f"{prefix}-{i:03d}",
            "tenant_id": f"tenant-{i % 7}",
            "data_source": {"type": "text", "text": f"chaos {i}"},
            "metadata": {"sleep": 0.1},  # eleven PROGRESS lines over 0.1 s, then exit 0
        }
        for i in range(JOBS)
    ]


def schedule(rng: random.Random, jobs: list[dict[str, Any]]) -> list[Fault]:
    """Enqueue waves spread over the window (so jobs run during every fault), and faults."""
    steps: list[Fault] = []
    size = -(-len(jobs) // WAVES)
    times = [0.0, *sorted(rng.uniform(0.5, WINDOW_S - 4) for _ in range(WAVES - 1))]
    for n, at in enumerate(times):
        steps.append(Fault(at, "enqueue", jobs[n * size : (n + 1) * size]))
    cut_at = rng.uniform(3.0, WINDOW_S - OUTAGE_S - 2)
    steps += [Fault(cut_at, "cut"), Fault(cut_at + OUTAGE_S, "restore")]
    # Late in the outage: the victim has run jobs whose changes the table has not seen.
    steps.append(Fault(cut_at + rng.uniform(2.5, OUTAGE_S - 0.5), "kill"))
    steps += [Fault(rng.uniform(1.0, WINDOW_S - 1), "kill") for _ in range(KILLS - 1)]
    steps.append(Fault(rng.uniform(2.0, WINDOW_S - 2), "redis"))
    return sorted(steps)


def with_port(dsn: str, port: int) -> str:
    """`dsn` pointed at 127.0.0.1:`port` (same user and database)."""
    parts = urlsplit(dsn)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


@pytest.fixture
def store_proxy(status_db: str) -> Iterator[TcpProxy]:
    target = urlsplit(status_db)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    proxy.start()
    yield proxy
    proxy.cut()


def processes_of_jobs(prefix: str) -> list[int]:
    """Pids of live processes whose environment names one of this test's jobs."""
    needle = f"INGEST_JOB_ID={prefix}-".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
        except OSError:
            continue
        if needle in env:
            found.append(int(entry))
    return found


def redis_truth(sq: SyncQueue, ids: list[str]) -> dict[str, Any]:
    async def read(queue: Any) -> dict[str, Any]:
        return {i: await queue.get(i) for i in ids}

    result: dict[str, Any] = with_queue(sq, read)
    return result


def table_rows(dsn: str, ids: list[str]) -> dict[str, tuple[str, float, int]]:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "select job_id, status, progress, attempt from public.ingestion_jobs"
            " where job_id = any(%s)",
            [ids],
        )
        return {r[0]: (r[1], float(r[2]), int(r[3])) for r in cur.fetchall()}


def divergence(truth: dict[str, Any], rows: dict[str, tuple[str, float, int]]) -> str:
    """A summary of rows that differ from Redis; empty when the table is right."""
    missing = [i for i in truth if i not in rows]
    stuck = [i for i in truth if i in rows and rows[i][0] != "completed"]
    wrong = [
        i
        for i in truth
        if i in rows
        and rows[i][0] == "completed"
        and (rows[i][1] != 100.0 or rows[i][2] != truth[i].attempt)
    ]
    if not (missing or stuck or wrong):
        return ""
    stuck_by = {}
    for i in stuck:
        stuck_by[rows[i][0]] = stuck_by.get(rows[i][0], 0) + 1
    return (
        f"{len(missing)} of {len(truth)} rows missing (e.g. {missing[:5]}); "
        f"{len(stuck)} not final {stuck_by} (e.g. {[(i, rows[i]) for i in stuck[:5]]}); "
        f"{len(wrong)} final but unequal to Redis "
        f"(e.g. {[(i, rows[i], truth[i].attempt) for i in wrong[:5]]})"
    )


@pytest.mark.timeout(300)
def test_status_rows_converge_after_kills_redis_restart_and_store_outage(
    start_daemon: Callable[..., DaemonProcess],
    private_redis: PrivateRedis,
    status_db: str,
    store_proxy: TcpProxy,
    queue_name: str,
    run_log: Path,
) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 32)))
    print(f"chaos seed {seed} (replay with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    prefix = f"chaos-{queue_name}"
    jobs = payloads(prefix)
    ids = [p["job_id"] for p in jobs]
    sq = SyncQueue(queue_name, private_redis.url)
    env = {**DAEMON_ENV, "INGEST_STATUS_DSN": with_port(status_db, store_proxy.port)}

    def launch() -> DaemonProcess:
        return start_daemon(redis_url=private_redis.url, **env)

    daemons = [launch() for _ in range(DAEMONS)]
    for d in daemons:
        d.wait_ready()
    began = time.monotonic()
    for step in schedule(rng, jobs):
        ahead = step.at - (time.monotonic() - began)
        if ahead > 0:
            time.sleep(ahead)  # the random schedule itself, not a wait for a condition
        print(f"{time.monotonic() - began:6.2f}s {step.kind}")
        if step.kind == "enqueue":
            sq.enqueue_many(step.wave)
            if step.at == 0:  # the orphan check below can see a child of ours at all
                wait_until(lambda: processes_of_jobs(prefix), 20, "a child of our jobs")
        elif step.kind == "kill":
            # A replacement starts without a wait (it waits for Redis itself), so the
            # schedule keeps its pace; a victim is one that runs jobs when there is one.
            running = [d for d in daemons if " ready: worker " in d.log()] or daemons
            victim = running[rng.randrange(len(running))]
            daemons.remove(victim)
            victim.signal(signal.SIGKILL)
            victim.wait_exit(10)
            daemons.append(launch())
        elif step.kind == "redis":
            private_redis.restart()
        elif step.kind == "cut":
            store_proxy.cut()
        else:
            store_proxy.start()
    print(f"{time.monotonic() - began:6.2f}s faults over")

    counts: dict[str, dict[str, int]] = {}

    def all_completed() -> bool:
        counts["last"] = sq.counts()
        return counts["last"]["completed"] == JOBS

    try:
        wait_until(all_completed, REDIS_DONE_S, "all jobs completed in Redis", interval=0.2)
    except AssertionError:
        pytest.fail(f"seed {seed}: not every job completed in Redis: {counts['last']}")
    truth = redis_truth(sq, ids)
    assert {r.state for r in truth.values()} == {JobState.COMPLETED}
    runs = read_runs(run_log)
    print(
        f"{time.monotonic() - began:6.2f}s all completed in Redis; "
        f"{len(runs)} child runs for {JOBS} jobs"
    )

    report = {"last": "never read"}

    def rows_match() -> bool:
        report["last"] = divergence(truth, table_rows(status_db, ids))
        return not report["last"]

    try:
        wait_until(rows_match, ROWS_FINAL_S, "rows equal to Redis", interval=0.5)
    except AssertionError:
        pytest.fail(
            f"seed {seed}: {ROWS_FINAL_S:.0f}s after Redis settled, the status table still "
            f"differs from Redis: {report['last']}"
        )
    print(f"{time.monotonic() - began:6.2f}s every row final and equal to Redis")

    wait_until(lambda: not processes_of_jobs(prefix), NO_CHILDREN_S, "no child of our jobs left")
    for d in daemons:
        d.wait_ready()  # SIGTERM before its handlers exist would not be a graceful stop
        d.signal(signal.SIGTERM)
    codes = {d.pid: d.wait_exit(EXIT_BOUND_S) for d in daemons}
    assert codes == dict.fromkeys(codes, 0), codes
    assert processes_of_jobs(prefix) == []
