"""The daemon's side of the status table: job events become StatusUpdates for the writer."""

from __future__ import annotations

import logging

from supervisor.events import OUTCOME_LEASE_LOST, JobFinished, JobProgress, JobStarted
from supervisor.status.update import StatusUpdate
from supervisor.status.writer import StatusWriter

log = logging.getLogger(__name__)


class StatusSink:
    """Implements supervisor.sinks.JobSink. Every method returns at once."""

    def __init__(self, writer: StatusWriter) -> None:
        self.writer = writer
        # job_id -> run key of the attempt this daemon is running: progress events do not
        # carry it. Bounded by the daemon's concurrency (removed when the job finishes).
        self._runs: dict[str, float] = {}

    async def start(self) -> None:
        await self.writer.start()

    def job_started(self, event: JobStarted) -> None:
        self._runs[event.job_id] = event.enqueued_at
        self.writer.submit(
            StatusUpdate(
                job_id=event.job_id,
                tenant_id=event.tenant_id,
                status="processing",
                attempt=event.attempt,
                max_attempts=event.max_attempts,
                seq_run=event.enqueued_at,
                seq_at=event.started_at,
                progress=0.0,
                worker_id=event.worker_id,
                queued_at=event.enqueued_at,
                started_at=event.started_at,
            )
        )

    def job_progress(self, event: JobProgress) -> None:
        run = self._runs.get(event.job_id)
        if run is None:
            return  # not a job this daemon started (or already finished): nothing to order by
        self.writer.submit(
            StatusUpdate(
                job_id=event.job_id,
                tenant_id=event.tenant_id,
                status="processing",
                attempt=event.attempt,
                seq_run=run,
                seq_at=event.at,
                progress=event.progress,
                progress_message=event.message,
            )
        )

    def job_finished(self, event: JobFinished) -> None:
        self._runs.pop(event.job_id, None)
        if event.outcome == OUTCOME_LEASE_LOST:
            return  # another holder owns the job; its writes are the true ones
        progress = 100.0 if event.table_status == "completed" else event.progress
        self.writer.submit(
            StatusUpdate(
                job_id=event.job_id,
                tenant_id=event.tenant_id,
                status=event.table_status,
                attempt=event.attempt,
                max_attempts=event.max_attempts,
                seq_run=event.enqueued_at,
                seq_at=event.finished_at,
                progress=progress,
                progress_message=event.progress_message,
                error=event.error,
                result=event.result,
                worker_id=event.worker_id or None,
                queued_at=event.enqueued_at,
                started_at=event.started_at or None,
                finished_at=event.finished_at,
                duration_ms=round(event.duration_s * 1000) if event.started_at else None,
                peak_rss_bytes=event.peak_rss_bytes,
            )
        )

    async def aclose(self, timeout_s: float) -> None:
        unwritten = await self.writer.aclose(timeout_s)
        if unwritten:
            log.error("%d status changes were not written at shutdown", unwritten)
