"""Claimed jobs the daemon cannot run the normal way: why (a payload stored before
validation bounded it), failing them with that reason, and giving back a job claimed as
the daemon stops."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from supervisor import events as ev
from supervisor.execution_context import ExecutionContext
from supervisor.queue.jobqueue import Claim, JobQueue
from supervisor.queue.payload import PayloadError, validate_payload
from supervisor.queue.redaction import SecretKeys
from supervisor.queue.states import TableStatus
from supervisor.redis_retry import call_until

# The daemon's logger: these lines are part of what a slot reports.
log = logging.getLogger("supervisor.daemon")


def unrunnable_reason(claim: Claim, is_secret: SecretKeys, secrets: Sequence[str]) -> str | None:
    """Why a claimed payload must not run (stored before validation bounded it), or None.
    `is_secret`: the daemon's secret-named keys; `secrets`: the payload's values under
    them (`secret_values`), which count against the payload's limit."""
    if claim.payload_error is not None:
        return f"Job payload refused: {claim.payload_error}"
    try:
        # Everything enqueue checks: a payload written into Redis by other means (an old
        # version, a hand edit) gets no less scrutiny than one that came through enqueue.
        validate_payload(claim.payload, is_secret, secrets=secrets)
    except PayloadError as exc:
        return f"Job payload refused: {exc}"
    return None


def _write_by(ctx: ExecutionContext, within_s: float) -> Callable[[], float]:
    """The deadline of a write for a job no execution settles: `within_s` from now, or
    the stop's settle deadline once the daemon stops, whichever comes first (asked before
    each attempt). A job whose write gives up comes back when its lease runs out."""
    end = time.monotonic() + within_s
    return lambda: min(end, ctx.settle_by.at or end)


async def give_back(ctx: ExecutionContext, queue: JobQueue, index: int, claim: Claim) -> None:
    """Release a job claimed after the stop came, unstarted and unspent (if Redis cannot
    take it back in time, its lease runs out and the reaper returns it)."""
    job_id = claim.job.job_id
    try:
        released = await call_until(
            _write_by(ctx, ctx.lease_s),
            lambda: queue.release(job_id, claim.token),
            what=f"giving back {job_id}",
            attempt_timeout_s=5.0,
        )
    except Exception as exc:  # Redis away, or refusing writes: the lease brings it back
        log.warning("slot %d: job %s claimed at the stop not given back: %r", index, job_id, exc)
        return
    if released == "released":
        log.info("slot %d: job %s claimed as the stop came; given back unstarted", index, job_id)
    elif released == "cancelled":
        log.info("slot %d: job %s claimed as the stop came; its cancel ended it", index, job_id)
    else:
        log.warning("slot %d: job %s claimed at the stop was no longer held", index, job_id)


async def give_back_in_flight(
    ctx: ExecutionContext, queue: JobQueue, index: int, token: str
) -> None:
    """The slot stops after a claim failed in flight: it may have taken a job. The claim is
    sent again with the same token, which brings that job back (or takes a new one), and
    whatever it brings is given back."""
    try:
        got = await call_until(
            _write_by(ctx, ctx.lease_s),
            lambda: queue.try_claim(ctx.worker_id, ctx.lease_s, token=token),
            what="taking back a claim in flight",
            attempt_timeout_s=5.0,
        )
    except Exception as exc:
        log.warning("slot %d: a claim in flight at the stop not taken back: %r", index, exc)
        return
    if isinstance(got, Claim):
        await give_back(ctx, queue, index, got)


async def fail_unrun(
    ctx: ExecutionContext,
    queue: JobQueue,
    index: int,
    claim: Claim,
    reason: str,
    *,
    retryable: bool,
) -> None:
    """Fail a claimed job the normal path could not settle (fenced by its token, so a
    job already settled is left alone) and tell the side channels."""
    job = claim.job
    log.error(
        "slot %d: job %s failed: %s",
        index,
        job.job_id,
        reason,
        extra={"job_id": job.job_id, "attempt": job.attempt},
    )
    started = time.time()
    try:
        failed = await call_until(
            _write_by(ctx, ctx.lease_s / 2),
            lambda: queue.fail(
                job.job_id, claim.token, reason, retryable=retryable, attempt=job.attempt
            ),
            what=f"failing {job.job_id}",
            attempt_timeout_s=5.0,
        )
    except Exception as exc:
        log.error(
            "slot %d: could not record the failure of %s (%s); its lease will run out "
            "and the reaper recovers it",
            index,
            job.job_id,
            exc,
        )
        return
    if failed.outcome == "lost":
        return
    final = failed.outcome != "retry"
    if final:
        outcome, table = (
            (ev.OUTCOME_CANCELLED, TableStatus.CANCELLED)
            if failed.outcome == "cancelled"
            else (ev.OUTCOME_FAILED, TableStatus.FAILED)
        )
    else:
        outcome, table = ev.OUTCOME_RETRIED, TableStatus.QUEUED
    try:
        ctx.sinks.job_finished(
            ev.JobFinished(
                queue=queue.queue,
                job_id=job.job_id,
                tenant_id=job.tenant_id,
                attempt=job.attempt,
                max_attempts=job.max_attempts,
                worker_id=ctx.worker_id,
                outcome=outcome,
                table_status=table.value,
                final=final,
                enqueued_at=job.enqueued_at,
                started_at=started,
                finished_at=time.time(),
                error=reason,
                ended="not_started",
            )
        )
    except Exception:
        log.exception("slot %d: side channels not told of %s", index, job.job_id)
