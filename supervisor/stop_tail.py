"""What a daemon does at its stop once its last job's outcome is written: within one
deadline in all, whatever does not answer (Redis, the status store, the tracing host)."""

from __future__ import annotations

import asyncio
import logging
import time

from supervisor.aio import join_bounded
from supervisor.execution_context import ExecutionContext
from supervisor.queue.workers import WorkerRegistry
from supervisor.redis_retry import why
from supervisor.runner.containment import ORPHANS
from supervisor.runner.workdir import removals_finished
from supervisor.status.service import StatusService

log = logging.getLogger(__name__)

# Everything after a stop's last outcome: upkeep, deregistration, flushes, removals.
STOP_TAIL_S = 10.0


async def run_stop_tail(
    upkeep: list[asyncio.Task[None]],
    registry: WorkerRegistry,
    ctx: ExecutionContext,
    status: StatusService | None,
) -> None:
    """The upkeep tasks ended, what the jobs left behind swept, the heartbeat removed, the
    sinks' and the status flushes (side by side), then the job directories still being
    removed: all within STOP_TAIL_S."""
    end = time.monotonic() + STOP_TAIL_S

    def left(cap: float = STOP_TAIL_S) -> float:
        return min(cap, max(0.1, end - time.monotonic()))

    for task in upkeep:
        task.cancel()
    await asyncio.gather(*(join_bounded(task, left(2.0)) for task in upkeep))
    ORPHANS.sweep()  # no job runs any more: whatever any of them left behind
    try:
        await asyncio.wait_for(registry.remove(ctx.worker_id), timeout=left(2.0))
    except Exception as exc:  # best effort (a Redis down, or refusing writes)
        log.warning("worker not deregistered (%s); its heartbeat expires by itself", why(exc))
    flushes = [ctx.sinks.aclose(max(0.1, left() - 0.5))]
    if status is not None:
        flushes.append(status.aclose(left()))
    await asyncio.gather(*flushes)
    # After the last status writes: a removal under way runs to its end regardless.
    if not await removals_finished(left()):
        log.warning("job directories still being removed as the daemon stops")
