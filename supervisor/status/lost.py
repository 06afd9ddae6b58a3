"""Rows of jobs Redis lost: they say queued or processing, and nothing will ever run them.

Redis can lose jobs altogether (a restart without persistence or from a file missing its
last second, an asynchronous failover, an operator deleting a queue's keys). Nothing in
Redis points at their rows any more, so the reconciler walks the table: a page of its
queue's rows that say queued or processing, in job id order, and marks failed those
whose job Redis does not have (or has only as another tenant's job of the same id). The
mark keeps the row's key (seq_run, rev) and is written only if the row still has it, so
anything later about the job replaces it.

A job also leaves Redis legitimately, with a last row still on its way through the outbox
(a purge's `cancelled`): a job is taken for lost only once everything the outbox held when
Redis was asked has been projected, and only if its row has not changed for a while.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from supervisor.queue.jobqueue import JobQueue
from supervisor.status.backend import StatusBackend, StatusStoreError
from supervisor.status.parked import LockBudget, ParkedRows, apply_unless_locked
from supervisor.status.trim import outbox_state
from supervisor.status.update import StatusUpdate

log = logging.getLogger(__name__)

# Only rows left unchanged this long (on the store's clock) are looked at.
LOST_AFTER_S = 60.0
LOST_ERROR = (
    "Lost: the queue's Redis no longer has this job (lost in a restart or failover, or "
    "set aside as unreadable and since removed); it will not run. Enqueue it again."
)
# How long to wait for the projectors to write what the outbox held.
PROJECTED_WAIT_S = 5.0
_MIGRATION = "20261201000600_status_rows_know_their_queue.sql"


def _lost_row(row: dict[str, Any], queue: str) -> StatusUpdate:
    """`row` failed as lost, at its own key: any later snapshot of the job replaces it."""
    return StatusUpdate(
        job_id=row["job_id"],
        tenant_id=row["tenant_id"],
        status="failed",
        attempt=row["attempt"],
        rev=row["rev"],
        seq_run=row["seq_run"],
        progress=row["progress"],
        progress_message=row["progress_message"],
        max_attempts=row["max_attempts"],
        error=LOST_ERROR,
        worker_id=row["worker_id"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        finished_at=time.time(),
        queue=queue,
        replaces_seq_run=row["seq_run"],
        replaces_rev=row["rev"],
    )


async def _projected_past(queue: JobQueue, at_ms: int, wait_s: float) -> bool:
    """True once every outbox entry appended up to `at_ms` (Redis clock) is in the store."""
    deadline = time.monotonic() + wait_s
    while True:
        state = await outbox_state(queue.client, queue.keys.status_outbox)
        oldest = state.oldest_unprojected_ms
        if state.has_group and (oldest is None or oldest > at_ms):
            return True
        if not state.has_group and state.length == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)


async def fail_lost_rows(
    queue: JobQueue,
    backend: StatusBackend,
    after: str,
    *,
    limit: int,
    lost_after_s: float = LOST_AFTER_S,
    projected_wait_s: float = PROJECTED_WAIT_S,
    budget: LockBudget | None = None,
) -> tuple[list[str], int, str]:
    """Look at up to `limit` of this queue's rows that say queued or processing, from job
    id `after` on, and fail those whose job Redis no longer has. Returns the jobs found
    lost, the rows written, and where the next look starts ('' once the table went round;
    `after` again when this look had to be put off). `budget`: the step's writes that may
    meet a locked row (see `parked.LockBudget`)."""
    try:
        rows = await backend.fetch_unsettled(queue.queue, after, limit, lost_after_s)
    except StatusStoreError as exc:
        if not exc.missing_column:
            raise
        log.warning("rows of jobs Redis lost are not looked for: apply migration %s", _MIGRATION)
        return [], 0, after
    next_after = rows[-1]["job_id"] if rows else ""
    if not rows:
        return [], 0, next_after
    tenants = await queue.job_tenants([r["job_id"] for r in rows])
    asked_ms = await queue.server_time_ms()
    # Lost: no job of that id, or only another tenant's (the id was reused after the job
    # left Redis). One whose record cannot be read is a job Redis still has.
    unknown = [r for r in rows if tenants.get(r["job_id"]) not in (r["tenant_id"], "")]
    if not unknown:
        return [], 0, next_after
    if not await _projected_past(queue, asked_ms, projected_wait_s):
        log.info("rows of jobs Redis lost: put off while the outbox is being projected")
        return [], 0, after
    # A job with a parked row is not lost: that row is its last word, on its way (read
    # once the outbox is projected, so a row parked meanwhile counts).
    held = await ParkedRows(queue.client, queue.keys).jobs()
    lost = [_lost_row(r, queue.queue) for r in unknown if r["job_id"] not in held]
    if not lost:
        return [], 0, next_after
    # A locked row is left to the next pass through the table (the look goes on: one
    # row held for hours must not stop the search for lost jobs).
    written, locked = await apply_unless_locked(backend, lost, budget or LockBudget())
    failed = [u.job_id for u in lost if u.job_id not in locked]
    if written:
        log.warning(
            "status rows of %d job(s) said queued or processing, but Redis no longer has "
            "them (it lost them); marked failed, e.g. %s",
            len(failed),
            ", ".join(failed[:5]),
        )
    return failed, written, next_after
