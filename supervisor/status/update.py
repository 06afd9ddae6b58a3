"""One change to a job's status row, its ordering key, and how two pending changes combine.

The rules here mirror `apply_job_status()` in the migration (and the sqlite upsert): a
change applies only when its key is greater than the stored one; columns a change leaves
as None keep their stored value, except that a change that starts an attempt clears the
previous attempt's outcome and a change that carries an outcome replaces it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

from supervisor.states import TableStatus

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
VALID_STATUSES = frozenset(s.value for s in TableStatus)
ERROR_MAX_CHARS = 1000

# Columns reset by a change that starts an attempt or carries an outcome.
OUTCOME_FIELDS = ("error", "result", "finished_at", "duration_ms", "peak_rss_bytes")

OrderKey = tuple[float, int, int, float]


@dataclass(frozen=True)
class StatusUpdate:
    """A change to one `ingestion_jobs` row. Times are unix seconds.

    Ordering: `seq_run` is the job's enqueue time as the queue records it (0 for the row a
    producer writes at enqueue), `seq_at` the time of the event within the attempt.
    """

    job_id: str
    tenant_id: str
    status: str
    attempt: int = 0
    seq_at: float = 0.0
    seq_run: float = 0.0
    progress: float | None = None
    progress_message: str | None = None
    max_attempts: int | None = None
    error: str | None = None
    result: Any = None
    worker_id: str | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_ms: int | None = None
    peak_rss_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.status not in VALID_STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
        if self.progress is not None:
            p = float(self.progress)
            object.__setattr__(self, "progress", 0.0 if math.isnan(p) else min(100.0, max(0.0, p)))
        if self.error is not None and len(self.error) > ERROR_MAX_CHARS:
            object.__setattr__(self, "error", self.error[:ERROR_MAX_CHARS])

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def key(self) -> OrderKey:
        return (self.seq_run, 1 if self.final else 0, self.attempt, self.seq_at)

    @property
    def starts_attempt(self) -> bool:
        return self.status == "processing" and self.started_at is not None

    @property
    def has_outcome(self) -> bool:
        return self.finished_at is not None

    @property
    def progress_only(self) -> bool:
        """A progress tick: may be throttled and is the first thing dropped under pressure."""
        return self.status == "processing" and not self.starts_attempt and not self.has_outcome

    def to_json(self) -> dict[str, Any]:
        """The object `apply_job_status()` takes: every column, None as JSON null."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def merge(old: StatusUpdate, new: StatusUpdate) -> StatusUpdate:
    """One change equivalent to applying `old` then `new` to any stored row.

    Returns `old` unchanged when `new` does not outrank it (a late or replayed change).
    """
    if new.job_id != old.job_id:
        raise ValueError("merge of changes to different jobs")
    if new.key <= old.key:
        return old
    if new.seq_run > old.seq_run:
        return new  # a new run resets the row; nothing of the old run survives
    changes: dict[str, Any] = {}
    resets = new.starts_attempt or new.has_outcome
    for f in fields(new):
        name = f.name
        if getattr(new, name) is not None:
            continue
        if name in OUTCOME_FIELDS and resets:
            continue
        if name in ("progress", "progress_message") and new.starts_attempt:
            continue
        old_value = getattr(old, name)
        if old_value is not None:
            changes[name] = old_value
    return replace(new, **changes) if changes else new
