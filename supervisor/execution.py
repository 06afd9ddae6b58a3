"""One claimed job, start to settle: child run, lease renewal, progress, fenced outcome.

The lease is renewed from the daemon's own loop every third of its length. A renewal that
finds the lease lost stops the child and discards its outcome; while Redis cannot be
reached, the child keeps running until the lease can no longer be trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

from supervisor import events as ev
from supervisor.aio import join_bounded
from supervisor.execution_context import FREE_HOST_FAULTS, FREE_SERVER_LOSSES, ExecutionContext
from supervisor.queue.jobqueue import Claim
from supervisor.queue.redaction import redact, scrub_value
from supervisor.queue.states import TableStatus
from supervisor.redis_retry import TRANSIENT, call_until, why
from supervisor.runner import ChildOutcome, EndReason, StopRequest, run_child

log = logging.getLogger(__name__)
# A job's progress reaches its status row at most this often; its record, its events and
# every state change are never throttled.
ROW_INTERVAL_S = 0.5
# A job's first progress is written once the job has run this long: one that ends sooner
# shows its outcome and no progress (a failed one still records how far it got), which
# spares Redis, the events stream and the status table a write per short job.
FIRST_PROGRESS_AFTER_S = 0.2


class JobExecution:
    def __init__(self, ctx: ExecutionContext, claim: Claim, secrets: Sequence[str]) -> None:
        """`secrets`: the payload's values under secret-named keys (`secret_values`), which
        every text the job reports is scrubbed of."""
        self.ctx = ctx
        self.claim = claim
        self.job_id = claim.job.job_id
        self.attempt = claim.job.attempt
        self.stop = StopRequest()
        self._log_extra = {"job_id": self.job_id, "attempt": self.attempt}
        self._secrets = list(secrets)
        self._redacted = redact(claim.payload, ctx.is_secret)
        self._lease_deadline = time.monotonic() + ctx.lease_s
        self._started = time.monotonic()
        self._progress_pending: tuple[float, str | None] | None = None
        self._progress_wakeup = asyncio.Event()
        self._lease_lost = False
        # Resolved once the child has ended and the start-failure gate has seen it: the slot
        # may start its next job then, while this one's outcome is still being written.
        # The helper tasks stop on it and on the flags below rather than on cancellation:
        # a cancel that lands while a Redis call is in flight can be swallowed (seen with
        # redis-py under asyncio timeouts), and an awaited task that ignored its cancel
        # would hang the slot.
        self.child_ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settling = False  # the outcome is being written
        self._done = asyncio.Event()
        self.outcome: ChildOutcome | None = None
        self.error: str | None = None  # the outcome's error, scrubbed of the job's secrets

    # ---- lease --------------------------------------------------------------------

    @property
    def _kill_margin_s(self) -> float:
        # Stop the child early enough that it is dead before the lease can pass to another.
        return min(self.ctx.kill_grace_s + 1.0, self.ctx.lease_s / 3)

    async def _renew_forever(self) -> None:
        interval = self.ctx.lease_s / 3
        while not self._done.is_set():
            await self.ctx.lease_checks.wait(self._done, interval)
            if self._done.is_set():
                return
            trust_until = self._lease_deadline - self._kill_margin_s
            sent_at = time.monotonic()
            try:
                renewed = await call_until(
                    trust_until,
                    lambda: self.ctx.queue.renew(self.job_id, self.claim.token, self.ctx.lease_s),
                    what=f"lease renewal of {self.job_id}",
                    attempt_timeout_s=5.0,
                )
            except TRANSIENT:
                log.error(
                    "lease can no longer be trusted (Redis unreachable); stopping the child",
                    extra=self._log_extra,
                )
                self._lost()
                return
            if not renewed.held:
                if self._settling:
                    return  # the outcome was just written; the fenced write itself tells
                self._lost("to another holder")
                return
            self._lease_deadline = sent_at + self.ctx.lease_s
            if self.ctx.metrics is not None:
                self.ctx.metrics.lease_renewed()
            if renewed.cancel_requested:
                self.stop.request(EndReason.CANCELLED)

    def _lost(self, how: str | None = None) -> None:
        """Stop the child: the lease is lost (`how`), or can no longer be trusted (said by
        the caller)."""
        if how is not None:
            log.warning("lease lost %s; stopping the child", how, extra=self._log_extra)
        self._lease_lost = True
        if self.ctx.metrics is not None:
            self.ctx.metrics.lease_lost()
        self.stop.request(EndReason.LEASE_LOST)

    # ---- progress -----------------------------------------------------------------

    def _on_progress(self, pct: float, message: str | None) -> None:
        self._progress_pending = (pct, message)
        self._progress_wakeup.set()
        self.ctx.sinks.job_progress(
            ev.JobProgress(
                queue=self.ctx.queue.queue,
                job_id=self.job_id,
                tenant_id=self.claim.job.tenant_id,
                attempt=self.attempt,
                progress=pct,
                message=message,
                at=time.time(),
            )
        )

    async def _forward_progress(self) -> None:
        """Write the newest progress to Redis, one write in flight at a time, the first once
        the job has run FIRST_PROGRESS_AFTER_S; after the child ends, write what is still
        pending (how far a failed attempt got) and stop.

        Every write updates the job record and its events; the status row gets at most one
        progress every ROW_INTERVAL_S. A progress written without its row is written again,
        with it, when the interval has passed and nothing newer came."""
        row_at = -ROW_INTERVAL_S
        unrowed: tuple[float, str | None] | None = None
        await self._progress_wakeup.wait()
        first_after = self._started + FIRST_PROGRESS_AFTER_S - time.monotonic()
        await asyncio.wait({self.child_ended}, timeout=max(0.0, first_after))
        while True:
            wait = None if unrowed is None else row_at + ROW_INTERVAL_S - time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wait is None else max(0.0, wait)):
                    await self._progress_wakeup.wait()
            self._progress_wakeup.clear()
            pending, self._progress_pending = self._progress_pending, None
            row = time.monotonic() >= row_at + ROW_INTERVAL_S
            if pending is None and row:
                pending, unrowed = unrowed, None
            if pending is not None and not self._lease_lost:
                try:
                    async with asyncio.timeout(5):
                        held = await self.ctx.queue.progress(
                            self.job_id, self.claim.token, *pending, row=row
                        )
                except TRANSIENT as exc:
                    log.debug("progress write skipped: %s", why(exc), extra=self._log_extra)
                else:
                    if not held:
                        self._lost("to another holder (a progress write found it)")
                        return
                    if row:
                        row_at, unrowed = time.monotonic(), None
                    else:
                        unrowed = pending
            if self.child_ended.done() and self._progress_pending is None:
                return

    # ---- run ----------------------------------------------------------------------

    def timeout_s(self) -> float:
        own = self.claim.payload.get("timeout_s")
        chosen = float(own) if own else self.ctx.job_timeout_s
        return min(chosen, self.ctx.max_job_timeout_s)

    def _end_child(self) -> None:
        """The child has ended: the slot may move on, the forwarder writes what is left."""
        if not self.child_ended.done():
            self.child_ended.set_result(None)
        self._progress_wakeup.set()

    async def run(self) -> ev.JobFinished:
        job = self.claim.job
        started = time.time()
        log.info("started (timeout %.0fs)", self.timeout_s(), extra=self._log_extra)
        self.ctx.sinks.job_started(
            ev.JobStarted(
                queue=self.ctx.queue.queue,
                job_id=self.job_id,
                tenant_id=job.tenant_id,
                attempt=self.attempt,
                max_attempts=job.max_attempts,
                worker_id=self.ctx.worker_id,
                payload=self._redacted,
                enqueued_at=job.enqueued_at,
                started_at=started,
            )
        )
        renewer = asyncio.create_task(self._renew_forever(), name=f"renew:{self.job_id}")
        forwarder = asyncio.create_task(self._forward_progress(), name=f"progress:{self.job_id}")
        try:
            outcome = await run_child(
                self.ctx.runner,
                job_id=self.job_id,
                attempt=self.attempt,
                job_json=self.claim.payload_json.encode(),
                timeout_s=self.timeout_s(),
                stop=self.stop,
                on_progress=self._on_progress,
                secrets=self._secrets,  # a child quoting them must not leak them onward
            )
            self.outcome = outcome
            self.error = outcome.error
            # Before the slot moves on: a closed gate must hold back its next start. The gate
            # logs the error: only ever the text scrubbed of the job's secrets.
            gated = dataclasses.replace(outcome, error=self.error, stderr_tail="")
            self.ctx.gate.record(gated, job.tenant_id)
            if outcome.succeeded:
                self._progress_pending = None  # complete() records 100 itself
            self._end_child()
            await join_bounded(forwarder, 6.0)
            # The renewer keeps the lease alive while the outcome is written.
            self._settling = True
            finished = await self._settle(outcome, started)
        finally:
            self._end_child()
            self._done.set()
            await join_bounded(renewer, 1.0)
            await join_bounded(forwarder, 1.0)
        self.ctx.sinks.job_finished(finished)
        log.info(
            "%s%s",
            finished.outcome,
            f": {finished.error[:200]}" if finished.error else "",
            extra={**self._log_extra, "outcome": finished.outcome},
        )
        return finished

    async def _settle(self, outcome: ChildOutcome, started: float) -> ev.JobFinished:
        """Write the outcome through the fenced protocol; decide what the status row shows."""
        q, token, job_id = self.ctx.queue, self.claim.token, self.job_id
        error = self.error
        result = await scrubbed_result(outcome, self._secrets)
        final, table, label = False, TableStatus.QUEUED.value, ev.OUTCOME_LEASE_LOST

        def deadline() -> float:  # asked before each attempt: a stop brings it closer
            stop = self.ctx.settle_by.at
            return self._lease_deadline if stop is None else min(self._lease_deadline, stop)

        async def write(call: Any) -> Any:
            return await call_until(
                deadline, call, what=f"settling {job_id}", attempt_timeout_s=5.0
            )

        released = outcome.ended is EndReason.SHUTDOWN
        if outcome.host_fault:
            # Back to the queue unspent, a bounded number of times. The start-failure gate
            # was closed when the child ended: the release wakes the other slots, which must
            # not claim it again at once.
            released = self.ctx.host_faults.add(job_id) <= FREE_HOST_FAULTS
        if outcome.server_lost:
            losses = self.ctx.server_losses.add(job_id)
            if losses > FREE_SERVER_LOSSES:
                released = False
                error = self.error = (
                    f"The fork server died {losses} times while this job ran "
                    "(a child that kills it?)"
                )
        try:
            if self._lease_lost or outcome.ended is EndReason.LEASE_LOST:
                pass
            elif released:
                given_back = await write(lambda: q.release(job_id, token))
                if given_back == "released":
                    label = ev.OUTCOME_RELEASED
                elif given_back == "cancelled":  # its cancel was pending: it ends now
                    final, table, label = True, TableStatus.CANCELLED.value, ev.OUTCOME_CANCELLED
            elif outcome.ended is EndReason.CANCELLED:
                if await write(
                    lambda: q.ack_cancel(job_id, token, peak_rss_bytes=outcome.peak_rss_bytes)
                ):
                    final, table, label = True, TableStatus.CANCELLED.value, ev.OUTCOME_CANCELLED
            elif outcome.succeeded:
                if await write(
                    lambda: q.complete(
                        job_id,
                        token,
                        result,
                        message=outcome.progress_message,
                        peak_rss_bytes=outcome.peak_rss_bytes,
                    )
                ):
                    final, table, label = True, TableStatus.COMPLETED.value, ev.OUTCOME_COMPLETED
            else:
                retryable = not outcome.permanent_failure
                failed = await write(
                    lambda: q.fail(
                        job_id,
                        token,
                        error or "failed",
                        retryable=retryable,
                        attempt=self.attempt,
                        peak_rss_bytes=outcome.peak_rss_bytes,
                    )
                )
                timed_out = outcome.ended is EndReason.TIMEOUT
                if failed.outcome == "retry":
                    label = ev.OUTCOME_TIMEOUT if timed_out else ev.OUTCOME_RETRIED
                elif failed.outcome == "cancelled":  # its cancel was pending: not retried
                    final, table, label = True, TableStatus.CANCELLED.value, ev.OUTCOME_CANCELLED
                elif failed.outcome == "failed":
                    final, table = True, TableStatus.FAILED.value
                    label = ev.OUTCOME_TIMEOUT if timed_out else ev.OUTCOME_FAILED
        except TRANSIENT as exc:
            stopping = self.ctx.settle_by.at is not None
            label = ev.OUTCOME_UNRECORDED
            log.error(
                "could not record the outcome before %s (%s); the job runs again once "
                "its lease has run out",
                "the daemon's stop deadline" if stopping else "the lease ran out",
                why(exc),
                extra=self._log_extra,
            )
        if label in (ev.OUTCOME_LEASE_LOST, ev.OUTCOME_UNRECORDED):
            table = ""
        job = self.claim.job
        return ev.JobFinished(
            queue=q.queue,
            job_id=job_id,
            tenant_id=job.tenant_id,
            attempt=self.attempt,
            max_attempts=job.max_attempts,
            worker_id=self.ctx.worker_id,
            outcome=label,
            table_status=table,
            final=final,
            enqueued_at=job.enqueued_at,
            started_at=started,
            finished_at=time.time(),
            payload=self._redacted,
            error=None if label == ev.OUTCOME_COMPLETED else error,
            result=result if label == ev.OUTCOME_COMPLETED else None,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            ended=outcome.ended.value,
            peak_rss_bytes=outcome.peak_rss_bytes,
            cpu_seconds=outcome.cpu_s,
            progress=outcome.progress,
            progress_message=outcome.progress_message,
            progress_lines=outcome.progress_lines,
            progress_rejected=outcome.progress_rejected,
            dropped_output_bytes=outcome.dropped_bytes,
        )


async def scrubbed_result(outcome: ChildOutcome, secrets: Sequence[str]) -> Any:
    """The outcome's result scrubbed of the job's secrets (its texts the runner scrubbed).
    With secrets, in a thread: a 1 MiB result scrubbed of every form of a payload's hundreds
    of secrets is up to a second of CPU, and the event loop is every slot's."""
    if not secrets:
        return outcome.result
    return await asyncio.to_thread(scrub_value, outcome.result, secrets)
