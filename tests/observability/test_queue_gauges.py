"""Queue gauges read from Redis: a Redis that hangs (accepts, never answers) shows as down,
not as the last values it gave."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from supervisor.metricdefs import metrics_for, refresh_queue_gauges
from supervisor.queue.jobqueue import JobQueue
from tests.redis_server import PrivateRedis


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path, persistent=False)
    server.start()
    yield server
    server.close()


async def test_a_redis_that_hangs_reads_as_down(private_redis: PrivateRedis) -> None:
    registry = CollectorRegistry()
    gauges = metrics_for(registry)
    client = Redis.from_url(private_redis.url, socket_timeout=30)  # longer than any scrape
    q = JobQueue(client, "hangs")
    try:
        assert await refresh_queue_gauges(q, gauges, timeout_s=2.0)
        assert registry.get_sample_value("queue_metrics_redis_up", {"queue": "hangs"}) == 1
        read = {"queue": "hangs"}
        assert registry.get_sample_value("queue_live_workers", read) == 0
        assert registry.get_sample_value("queue_jobs_in_state", {**read, "state": "waiting"}) == 0
        private_redis.pause()
        try:
            started = time.monotonic()
            assert not await refresh_queue_gauges(q, gauges, timeout_s=0.5)
            assert time.monotonic() - started < 5.0
            assert registry.get_sample_value("queue_metrics_redis_up", {"queue": "hangs"}) == 0
            # One slow refresh keeps the last values (the alerts' `for:` timers go on)...
            assert registry.get_sample_value("queue_live_workers", read) == 0
            # ...a Redis unreadable for long removes them.
            assert not await refresh_queue_gauges(q, gauges, timeout_s=0.5, stale_after_s=0)
            # No stale count stays to hide what the processes still reading Redis report.
            for name in ("queue_live_workers", "queue_serving_workers", "queue_live_worker_slots"):
                assert registry.get_sample_value(name, read) is None, name
            assert (
                registry.get_sample_value("queue_jobs_in_state", {**read, "state": "waiting"})
                is None
            )
        finally:
            private_redis.resume()
        assert await refresh_queue_gauges(q, gauges, timeout_s=2.0)
        assert registry.get_sample_value("queue_live_workers", read) == 0
    finally:
        await client.aclose()


async def test_serving_workers_leave_out_the_stopping_and_those_that_cannot_start_children(
    queue_name: str,
) -> None:
    """Live is not capacity: a supervisor that is stopping, or whose children keep failing
    to start, still beats; the serving gauge (and its alert) leaves it out, as
    /health/queue does."""
    from supervisor.queue.workers import WorkerRegistry
    from tests.conftest import REDIS_URL

    registry = CollectorRegistry()
    gauges = metrics_for(registry)
    client = Redis.from_url(REDIS_URL)
    q = JobQueue(client, queue_name)
    beats = WorkerRegistry(client, q.keys)
    try:
        await beats.beat("h:i1:1", {"slots": 2, "spawn_pauses": 0}, 60)
        await beats.beat("h:i2:2", {"slots": 2, "spawn_pauses": 3}, 60)
        await beats.beat("h:i3:3", {"slots": 2, "stopping": True}, 60)
        assert await refresh_queue_gauges(q, gauges, timeout_s=5.0)
        labels = {"queue": queue_name}
        assert registry.get_sample_value("queue_live_workers", labels) == 3
        assert registry.get_sample_value("queue_serving_workers", labels) == 1
    finally:
        await client.aclose()
