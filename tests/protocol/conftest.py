"""Fixtures for the protocol tests: an asyncio client on the real Redis and queue factories."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection

from supervisor.queue.jobqueue import Backoff, JobQueue, Retention

T = TypeVar("T")


class CountingConnection(Connection):
    """Counts requests written to the socket: one per round trip (a pipeline is one write)."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sent += 1
        await super().send_packed_command(command, check_health)


def job(job_id: str, **extra: Any) -> dict[str, Any]:
    """A valid payload with the given id; `extra` overrides or adds fields."""
    payload: dict[str, Any] = {
        "job_id": job_id,
        "tenant_id": "tenant-a",
        "data_source": {"type": "text", "text": f"body of {job_id}"},
    }
    payload.update(extra)
    return payload


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool] = bool,
    *,
    timeout_s: float = 10.0,
    every_s: float = 0.02,
) -> T:
    """Poll `probe` until `accept` holds for its value; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s; last value {value!r}")
        await asyncio.sleep(every_s)


async def queue_keys(client: Redis, queue: str) -> list[str]:
    found = [k async for k in client.scan_iter(match=f"ingest:{{{queue}}}:*", count=1000)]
    return sorted(k.decode() if isinstance(k, bytes) else str(k) for k in found)


async def server_ms(client: Redis | RedisCluster) -> int:
    secs, micros = await client.time()
    return int(secs) * 1000 + int(micros) // 1000


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_url)
    yield c
    await c.aclose()


QueueFactory = Callable[..., JobQueue]
FAST_BACKOFF = Backoff(base_s=0.2, factor=2.0, cap_s=2.0, jitter=0.2)
DEFAULT_RETENTION = Retention()


@pytest.fixture
def make_queue(client: Redis, queue_name: str) -> QueueFactory:
    """A JobQueue on this test's queue; keyword arguments override the fast test defaults."""

    def make(
        *,
        backoff: Backoff = FAST_BACKOFF,
        retention: Retention = DEFAULT_RETENTION,
        default_max_attempts: int = 3,
        redis_client: Redis | None = None,
    ) -> JobQueue:
        return JobQueue(
            redis_client or client,
            queue_name,
            default_max_attempts=default_max_attempts,
            backoff=backoff,
            retention=retention,
        )

    return make


@pytest.fixture
def q(make_queue: QueueFactory) -> JobQueue:
    return make_queue()


CLAIMER = Path(__file__).with_name("claimer.py")


async def start_claimer(*args: str) -> asyncio.subprocess.Process:
    """Start tests/protocol/claimer.py and wait for its `ready` line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CLAIMER), *args, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    assert line.strip() == b"ready", line
    return proc


async def events_of(client: Redis | RedisCluster, key: str) -> list[dict[str, str]]:
    """Every entry of an events stream, oldest first, as str fields."""
    raw: Any = await client.xrange(key)
    return [
        {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in fields.items()
        }
        for _id, fields in raw or []
    ]
