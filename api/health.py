"""The queue health check: every probe runs at once under one hard deadline.

Probes that have not answered by the deadline are abandoned, not awaited: a Redis that is
paused (SIGSTOP) accepts TCP connections and then never replies, and even cancelling a
probe could wait on that socket. The answer is therefore ready within the budget whatever
Redis does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.context import ApiContext
from api.models import HealthDetails, QueueCounts, QueueHealth, Readiness
from supervisor.queue.workers import SPAWN_PAUSES_UNSERVING, serving

_MISSING = object()


async def _probe_all(
    ctx: ApiContext, probes: dict[str, Awaitable[Any]], budget_s: float
) -> dict[str, Any]:
    """name -> result, an exception, or _MISSING when the probe missed the deadline."""
    tasks = {name: asyncio.ensure_future(p) for name, p in probes.items()}
    await asyncio.wait(tasks.values(), timeout=budget_s)
    out: dict[str, Any] = {}
    for name, task in tasks.items():
        if task.done():
            out[name] = task.exception() or task.result()
        else:
            task.cancel()
            # Keep a reference until it unwinds; retrieve its exception so none is logged.
            ctx.spawn(_reap(task))
            out[name] = _MISSING
    return out


async def _reap(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        await task


def _write_probe(ctx: ApiContext) -> Awaitable[Any]:
    """A write in the queue's own hash slot, as an enqueue makes: answering is not enough."""
    q = ctx.health_queue
    return q.client.set(q.keys.health_probe, "1", px=10_000)


def _redis_status(ping: Any, write: Any) -> str:
    """`ready`, `timeout`, `readonly` (answers, refuses writes: a replica, an old master
    after a failover) or `error` (any other refusal, such as out of memory)."""
    for probe in (ping, write):
        if probe is _MISSING or isinstance(probe, RedisTimeoutError | asyncio.TimeoutError):
            return "timeout"
    if ping is not True:
        return "error"
    if isinstance(write, ReadOnlyError):
        return "readonly"
    return "ready" if write is True else "error"


def _ok(value: Any) -> bool:
    return value is not _MISSING and not isinstance(value, BaseException)


async def queue_health(ctx: ApiContext) -> QueueHealth:
    q = ctx.health_queue
    s = ctx.settings
    probes: dict[str, Awaitable[Any]] = {
        "ping": q.client.ping(),
        "write": _write_probe(ctx),
        "counts": q.counts(),
        "workers": q.live_workers(),
    }
    if s.max_wait_s > 0:
        probes["age"] = q.oldest_waiting_age_s()
    got = await _probe_all(ctx, probes, s.health_timeout_s)

    redis_status = _redis_status(got["ping"], got["write"])
    counts_read = _ok(got["counts"])
    counts = got["counts"] if counts_read else {}
    workers = got["workers"] if _ok(got["workers"]) else []
    running = [w for w in workers if not w.get("stopping")]
    able = serving(workers)
    concurrency = sum(int(w.get("slots") or 0) for w in able)

    reasons: list[str] = []
    if redis_status != "ready":
        reasons.append(f"redis: {redis_status}")
    queue_ok = counts_read
    if not queue_ok:
        reasons.append("queue: counts unavailable")
    waiting = int(counts.get("waiting", 0))
    if queue_ok and s.max_backlog > 0 and waiting > s.max_backlog:
        queue_ok = False
        reasons.append(f"queue: {waiting} jobs waiting, more than {s.max_backlog}")
    if "age" in got:
        age = got["age"]
        if not _ok(age):
            queue_ok = False
            reasons.append("queue: oldest waiting age unavailable")
        elif age is not None and age > s.max_wait_s:
            queue_ok = False
            reasons.append(
                f"queue: oldest job has waited {age:.0f} s, longer than {s.max_wait_s:g} s"
            )

    redis_ok = redis_status == "ready"
    worker_ok = _ok(got["workers"]) and concurrency > 0
    if not _ok(got["workers"]):
        reasons.append("worker: heartbeats unavailable")
    elif concurrency == 0:
        reasons.append("worker: no live supervisor with free or busy slots")
    if len(running) > len(able):
        reasons.append(
            f"worker: {len(running) - len(able)} supervisor(s) cannot start children "
            f"(spawns paused {SPAWN_PAUSES_UNSERVING} times or more in a row)"
        )
    return QueueHealth(
        healthy=redis_ok and queue_ok and worker_ok,
        redis=redis_ok,
        queue=queue_ok,
        worker=worker_ok,
        details=HealthDetails(
            redis_status=redis_status,
            queue_counts=QueueCounts(**{k: int(counts.get(k, 0)) for k in QueueCounts.model_fields})
            if counts_read
            else None,
            worker_concurrency=concurrency,
        ),
        reasons=reasons,
    )


async def readiness(ctx: ApiContext) -> Readiness:
    probes = {"ping": ctx.health_queue.client.ping(), "write": _write_probe(ctx)}
    got = await _probe_all(ctx, probes, ctx.settings.health_timeout_s)
    status = _redis_status(got["ping"], got["write"])
    return Readiness(ready=status == "ready", redis_status=status)
