"""Whole-product tests: real daemon processes wired to the real side channels (metrics
server, Langfuse SDK, status stores, the real ingest_worker child).

The fixtures are the other test areas' own, imported so pytest registers them here too:
daemons and the queue from tests/daemon, the migrated database and PostgREST stand-in from
tests/status, the loopback site from tests/worker.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import redis

from supervisor.stop_tail import STOP_TAIL_S
from tests.conftest import REDIS_URL
from tests.daemon.conftest import (  # noqa: F401  (fixtures)
    DaemonProcess,
    SyncQueue,
    q,
    run_log,
    start_daemon,
    wait_until,
)
from tests.observability.test_tracing import receiver  # noqa: F401  (fixture)
from tests.status.conftest import standin, status_db  # noqa: F401  (fixtures)
from tests.worker.conftest import site  # noqa: F401  (fixture)

# SIGTERM to exit with no job running: the shutdown grace of these daemons (1 s), the
# stop's tail (the flushes), and generous slack for process exit on a busy machine.
EXIT_BOUND_S = 1.0 + STOP_TAIL_S + 8.0
LANGFUSE_SECRET = "sk-lf-e2e-never-in-a-span"


def langfuse_env(host: str, public_key: str) -> dict[str, str]:
    """Daemon settings for Langfuse at `host`; a distinct public key per daemon of a test."""
    return {
        "LANGFUSE_PUBLIC_KEY": public_key,
        "LANGFUSE_SECRET_KEY": LANGFUSE_SECRET,
        "LANGFUSE_HOST": host,
        "INGEST_SECRET_KEYS": "customer_password",
    }


def metrics_env(port: int) -> dict[str, str]:
    """Daemon settings to serve /metrics on exactly `port` (base port, instance 0)."""
    return {"INGEST_METRICS_PORT": str(port), "INGEST_INSTANCE": "0"}


def free_port() -> int:
    """A loopback port nothing listens on right now (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_batch(sq: SyncQueue, payloads: list[dict[str, Any]], timeout: float = 60) -> float:
    """Enqueue `payloads` and wait until every one is completed; seconds it took."""
    ids = [p["job_id"] for p in payloads]
    started = time.monotonic()
    sq.enqueue_many(payloads)
    wait_until(lambda: all_completed(sq, ids), timeout, f"{len(ids)} jobs completed")
    return time.monotonic() - started


def batch_times(
    batches: dict[str, tuple[SyncQueue, list[dict[str, Any]]]], timeout: float = 60
) -> dict[str, float]:
    """Enqueue every batch at once; for each, seconds until all its jobs completed."""
    started = time.monotonic()
    for sq, payloads in batches.values():
        sq.enqueue_many(payloads)
    took: dict[str, float] = {}

    def all_done() -> bool:
        for name, (sq, payloads) in batches.items():
            if name not in took and all_completed(sq, [p["job_id"] for p in payloads]):
                took[name] = time.monotonic() - started
        return len(took) == len(batches)

    wait_until(all_done, timeout, f"batches {sorted(batches)} completed")
    return took


def all_completed(sq: SyncQueue, ids: Iterable[str]) -> bool:
    from supervisor.queue.states import JobState

    async def check(queue: Any) -> bool:
        for job_id in ids:
            rec = await queue.get(job_id)
            if rec is None or rec.state is not JobState.COMPLETED:
                return False
        return True

    return bool(with_queue(sq, check))


def with_queue(sq: SyncQueue, fn: Callable[[Any], Any]) -> Any:
    """Run `await fn(JobQueue)` on one connection (several calls, one round of setup)."""
    from redis.asyncio import Redis

    from supervisor.queue.jobqueue import JobQueue

    async def go() -> Any:
        client = Redis.from_url(sq.redis_url)
        try:
            return await fn(JobQueue(client, sq.queue))
        finally:
            await client.aclose()

    return asyncio.run(go())


def stop_daemon(daemon: DaemonProcess, timeout: float) -> float:
    """SIGTERM, wait for exit code 0; seconds from the signal to the exit."""
    sent = time.monotonic()
    daemon.signal(signal.SIGTERM)
    code = daemon.wait_exit(timeout)
    took = time.monotonic() - sent
    assert code == 0, f"daemon exited {code}:\n{daemon.log()}"
    return took


@pytest.fixture
def more_queues(queue_name: str) -> Iterator[Callable[[str], SyncQueue]]:
    """Extra queues beside `queue_name` (named after it), their keys deleted afterwards."""
    made: list[str] = []

    def make(suffix: str) -> SyncQueue:
        name = f"{queue_name}-{suffix}"
        made.append(name)
        return SyncQueue(name)

    yield make
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for name in made:
            keys = list(client.scan_iter(match=f"ingest:{{{name}}}:*", count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()
