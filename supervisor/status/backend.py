"""The status store interface every backend implements, and the `none` backend."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from supervisor.status.update import StatusUpdate

log = logging.getLogger(__name__)


class RowVersion(NamedTuple):
    """What the reconciler compares of a row with its job's record."""

    seq_run: float
    rev: int
    tenant_id: str
    status: str
    attempt: int
    queue: str | None  # None: a row from before rows named it, or a store without the column
    started_at: float | None  # unix seconds: which claim of the attempt the row shows


# Statuses of a job Redis still has to settle.
UNSETTLED = ("queued", "processing")


# Row columns `fetch()` returns, the same for every backend; times as unix seconds.
COLUMNS = (
    "job_id",
    "tenant_id",
    "status",
    "progress",
    "progress_message",
    "attempt",
    "max_attempts",
    "error",
    "result",
    "worker_id",
    "queued_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "peak_rss_bytes",
    "updated_at",
    "seq_run",
    "rev",
    "queue",
)
TIME_COLUMNS = frozenset({"queued_at", "started_at", "finished_at", "updated_at"})


# SQLSTATE classes that mean the data was rejected: retrying the same request cannot help.
_PERMANENT_CLASSES = ("22", "23")
_UNDEFINED_COLUMN = "42703"
_LOCK_NOT_AVAILABLE = "55P03"
_QUERY_CANCELED = "57014"  # statement_timeout


class StatusStoreError(Exception):
    """A write the store refused or could not take. `permanent` means retrying cannot help
    (the data itself was rejected, also told by a PostgreSQL `sqlstate` of class 22 or 23);
    anything else is retried with backoff."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        sqlstate: str = "",
        timed_out: bool = False,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.permanent = permanent or sqlstate[:2] in _PERMANENT_CLASSES
        # The request ran out of time (ours, or the server's statement timeout).
        self.timed_out = timed_out or sqlstate == _QUERY_CANCELED

    @property
    def missing_column(self) -> bool:
        """The table lacks a column asked for: a migration not applied yet."""
        return self.sqlstate == _UNDEFINED_COLUMN

    @property
    def row_locked(self) -> bool:
        """A row of the request is locked by another session (the store itself answers)."""
        return self.sqlstate == _LOCK_NOT_AVAILABLE


@runtime_checkable
class StatusBackend(Protocol):
    name: str

    async def apply(self, updates: Sequence[StatusUpdate]) -> int:
        """Apply a batch in one request, monotonically; returns rows changed.
        Raises StatusStoreError (or a timeout) when the batch was not applied."""
        ...

    async def fetch(self, job_id: str) -> dict[str, Any] | None: ...

    async def fetch_versions(self, job_ids: Sequence[str]) -> dict[str, RowVersion]:
        """(seq_run, rev, tenant_id, status, attempt, queue) of the rows of these jobs that
        exist (the reconciler's check)."""
        ...

    async def fetch_unsettled(
        self, queue: str, after: str, limit: int, older_than_s: float
    ) -> list[dict[str, Any]]:
        """Up to `limit` rows of `queue`'s jobs that say queued or processing and have not
        changed for `older_than_s` (on the store's clock where it has one), with a job id
        greater than `after`, in job id order (the look for jobs Redis lost). A store
        without the queue column raises a StatusStoreError that is `missing_column`."""
        ...

    async def aclose(self) -> None: ...


class NoneBackend:
    """Status writing turned off: every write succeeds and nothing is stored."""

    name = "none"

    async def apply(self, updates: Sequence[StatusUpdate]) -> int:
        return 0

    async def fetch(self, job_id: str) -> dict[str, Any] | None:
        return None

    async def fetch_versions(self, job_ids: Sequence[str]) -> dict[str, RowVersion]:
        return {}

    async def fetch_unsettled(
        self, queue: str, after: str, limit: int, older_than_s: float
    ) -> list[dict[str, Any]]:
        return []

    async def aclose(self) -> None:
        return None
