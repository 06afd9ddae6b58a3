"""What the daemon tells its side channels (status writer, metrics, tracer) about a job.

Plain frozen records; the daemon builds them, sinks only read them. Payloads in these
records are already redacted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class JobStarted:
    queue: str
    job_id: str
    tenant_id: str
    attempt: int
    max_attempts: int
    worker_id: str
    payload: dict[str, Any]  # redacted
    enqueued_at: float  # unix seconds
    started_at: float


@dataclass(frozen=True)
class JobProgress:
    queue: str
    job_id: str
    tenant_id: str
    attempt: int
    progress: float
    message: str | None
    at: float


# Outcomes of one attempt, as `queue_jobs_total{status}` counts them.
OUTCOME_COMPLETED = "completed"
OUTCOME_FAILED = "failed"  # no attempts left, or permanent failure (exit 65)
OUTCOME_RETRIED = "retried"  # failed, another attempt scheduled
OUTCOME_TIMEOUT = "timeout"  # timed out (retried or failed: see `final`)
OUTCOME_CANCELLED = "cancelled"
OUTCOME_RELEASED = "released"  # given back to the queue at shutdown, attempt not spent
OUTCOME_LEASE_LOST = "lease_lost"  # another holder owns the job now; nothing was written
# Redis could not be reached to record it before the deadline: the job runs again once its
# lease has run out.
OUTCOME_UNRECORDED = "unrecorded"
OUTCOME_STALLED = "stalled"  # recovered by the reaper after a dead holder's lease ran out


@dataclass(frozen=True)
class JobFinished:
    queue: str
    job_id: str
    tenant_id: str
    attempt: int
    max_attempts: int
    worker_id: str
    outcome: str  # one of OUTCOME_*
    table_status: str  # TableStatus value the row should now show ("queued" when retried/released)
    final: bool  # True when the job reached completed/failed/cancelled
    enqueued_at: float
    started_at: float
    finished_at: float
    payload: dict[str, Any] = field(default_factory=dict)  # redacted
    error: str | None = None  # <= 1000 chars, secrets scrubbed
    result: Any = None
    exit_code: int | None = None
    signal: int | None = None
    ended: str | None = None  # how the child ended: exited, timeout, cancelled, lease_lost, ...
    peak_rss_bytes: int | None = None
    cpu_seconds: float | None = None
    progress: float = 0.0
    progress_message: str | None = None
    progress_lines: int = 0
    progress_rejected: int = 0
    dropped_output_bytes: int = 0

    @property
    def duration_s(self) -> float:
        return max(0.0, self.finished_at - self.started_at)
