"""Job states and how they read in the status table.

No internal imports: every module may import this one.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TableStatus(StrEnum):
    """The `status` column of `ingestion_jobs`, as the web app reads it."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
)

# The only transitions the Lua scripts perform; asserted by tests against real Redis.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.WAITING: frozenset({JobState.ACTIVE, JobState.CANCELLED}),
    JobState.DELAYED: frozenset({JobState.WAITING, JobState.CANCELLED}),
    JobState.ACTIVE: frozenset(
        {
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.DELAYED,
            JobState.WAITING,
            JobState.CANCELLED,
        }
    ),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset({JobState.WAITING}),
    JobState.CANCELLED: frozenset({JobState.WAITING}),
}

_TABLE_STATUS: dict[JobState, TableStatus] = {
    JobState.WAITING: TableStatus.QUEUED,
    JobState.DELAYED: TableStatus.QUEUED,
    JobState.ACTIVE: TableStatus.PROCESSING,
    JobState.COMPLETED: TableStatus.COMPLETED,
    JobState.FAILED: TableStatus.FAILED,
    JobState.CANCELLED: TableStatus.CANCELLED,
}


def table_status(state: JobState) -> TableStatus:
    return _TABLE_STATUS[state]


def can_transition(src: JobState, dst: JobState) -> bool:
    return dst in TRANSITIONS[src]
