"""The daemon's upkeep loops, each running until cancelled at shutdown: the reaper of
expired leases, the heartbeat, the listener that passes cancel requests to running jobs,
and systemd's watchdog. Redis being away never ends one: each logs it and tries again on
its next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from redis.exceptions import RedisError

from supervisor.execution import JobExecution
from supervisor.execution_context import LeaseChecks
from supervisor.queue.jobqueue import JobQueue
from supervisor.queue.workers import WorkerRegistry
from supervisor.redis_retry import TRANSIENT, why
from supervisor.runner import EndReason
from supervisor.sdnotify import SystemdNotifier

# The daemon's logger: these lines are part of what a daemon reports (log filters select
# on the logger's name).
log = logging.getLogger("supervisor.daemon")
REAP_INTERVAL_MAX_S = 5.0


async def reap_forever(queue: JobQueue, lease_s: float, metrics: Any) -> None:
    """Return jobs whose lease ran out to the queue (or dead-letter them), every quarter
    lease, at most every REAP_INTERVAL_MAX_S. `metrics`: DaemonMetrics, or None."""
    interval = min(REAP_INTERVAL_MAX_S, lease_s / 4)
    while True:
        try:
            async with asyncio.timeout(5):
                reaped = await queue.reap()
            n = len(reaped.recovered) + len(reaped.dead_lettered) + len(reaped.cancelled)
            if n:
                log.warning(
                    "recovered stalled jobs: back to waiting %s, failed %s, cancelled %s",
                    reaped.recovered,
                    reaped.dead_lettered,
                    reaped.cancelled,
                )
                if metrics is not None:
                    metrics.stalled_recovered(n)
        except TRANSIENT as exc:
            log.debug("reap skipped: %s", why(exc))
        except RedisError as exc:  # a script error (out of memory, a bad record): next time
            log.error("reap failed: %s", why(exc))
        await asyncio.sleep(interval)


async def beat_forever(
    registry: WorkerRegistry,
    worker_id: str,
    info: Callable[[], dict[str, Any]],
    ttl_s: float,
    queue: JobQueue,
    lease_checks: LeaseChecks,
) -> None:
    """Beat every third of the TTL, and look at which Redis server answers (see
    LeaseChecks.saw_server)."""
    while True:
        try:
            async with asyncio.timeout(5):
                await registry.beat(worker_id, info(), ttl_s)
                lease_checks.saw_server(await queue.server_id())
        except TRANSIENT as exc:
            log.debug("heartbeat skipped: %s", why(exc))
        except RedisError as exc:  # OOM, MISCONF, READONLY: never the heartbeat's end
            log.warning("heartbeat refused by Redis: %s", why(exc))
        await asyncio.sleep(ttl_s / 3)


async def pass_on_cancels(queue: JobQueue, active: Mapping[str, JobExecution]) -> None:
    """Stop the child of each running job a cancel is requested for."""
    pause = 0.2
    while True:
        try:
            async for job_id in queue.cancel_requests():
                pause = 0.2
                execution = active.get(job_id)
                if execution is not None:
                    log.info("cancel requested", extra={"job_id": job_id})
                    execution.stop.request(EndReason.CANCELLED)
        except TRANSIENT as exc:
            log.debug("cancel listener reconnecting: %s", why(exc))
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5.0)


async def feed_watchdog(notifier: SystemdNotifier) -> None:
    """WATCHDOG=1 twice per interval systemd asked for; nothing when it asked for none."""
    interval = notifier.watchdog_interval_s()
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval / 2)
