"""One job's status row as Redis last recorded it, and the key that orders such rows.

Rows are whole snapshots, never deltas: applying one replaces every column of the stored
row when its key is greater (see `apply_job_status()` in the migrations and the sqlite
upsert), so redelivering, replaying or reordering snapshots can never make a row go back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from supervisor.queue.states import TableStatus

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
VALID_STATUSES = frozenset(s.value for s in TableStatus)
ERROR_MAX_CHARS = 1000

OrderKey = tuple[float, int]


@dataclass(frozen=True)
class StatusUpdate:
    """An `ingestion_jobs` row. Times are unix seconds.

    `seq_run` is the run's enqueue time (a manual retry starts a new run) and `rev` the
    job record's revision in Redis within the run: together they order snapshots.
    """

    job_id: str
    tenant_id: str
    status: str
    attempt: int = 0
    rev: int = 0
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
    # The queue whose job this is (several queues may share the table); None from writers
    # that do not say, which leaves the stored row's.
    queue: str | None = None
    # Set by the reconciler alone, for a row ahead of a Redis that lost its last writes:
    # write this row if the stored one is still at this key, whatever the order.
    replaces_seq_run: float | None = None
    replaces_rev: int | None = None

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
        return (self.seq_run, self.rev)

    def to_json(self) -> dict[str, Any]:
        """The object `apply_job_status()` takes: every column, None as JSON null."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def newest_per_job(updates: list[StatusUpdate]) -> list[StatusUpdate]:
    """One snapshot per job: the one with the greatest key (the others are superseded)."""
    best: dict[str, StatusUpdate] = {}
    for u in updates:
        old = best.get(u.job_id)
        if old is None or u.key > old.key:
            best[u.job_id] = u
    return list(best.values())
