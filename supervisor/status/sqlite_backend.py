"""Status store in a local SQLite file: the embedded default for the demo and development.

The same table as the migration (times as unix seconds, result as JSON text) and the same
monotonic rule, as one upsert whose WHERE compares ordering keys; several daemons may share
the file (SQLite serializes the writes).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from supervisor.status.backend import COLUMNS, UNSETTLED, RowVersion, StatusStoreError
from supervisor.status.update import StatusUpdate

_SCHEMA = """
create table if not exists ingestion_jobs (
    job_id text primary key check (length(job_id) between 1 and 128
        and job_id not glob '*[^A-Za-z0-9_.:-]*'),
    tenant_id text not null,
    status text not null check (status in
        ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    progress real not null default 0 check (progress >= 0 and progress <= 100),
    progress_message text,
    attempt integer not null default 0 check (attempt >= 0),
    max_attempts integer,
    error text check (length(error) <= 1000),
    result text,
    worker_id text,
    queued_at real,
    started_at real,
    finished_at real,
    duration_ms integer,
    peak_rss_bytes integer,
    created_at real not null,
    updated_at real not null,
    seq_run real not null default 0,
    seq_at real not null default 0,
    rev integer not null default 0,
    queue text
);
create index if not exists ingestion_jobs_tenant_status_idx
    on ingestion_jobs (tenant_id, status, updated_at desc);
create index if not exists ingestion_jobs_updated_at_idx on ingestion_jobs (updated_at);
"""

# The look for jobs Redis lost (after the queue column exists in an older file too).
_QUEUE_INDEX = """
create index if not exists ingestion_jobs_queue_active_idx on ingestion_jobs (queue, job_id)
    where status in ('queued', 'processing')
"""

# Columns added since the first version, for files an older version made.
_ADDED_COLUMNS = (("rev", "integer not null default 0"), ("queue", "text"))

# The same rule as apply_job_status(): a snapshot replaces the row when its (seq_run, rev)
# is greater, and never moves a row to another tenant.
_UPSERT = """
insert into ingestion_jobs (
    job_id, tenant_id, status, progress, progress_message, attempt, max_attempts, error,
    result, worker_id, queued_at, started_at, finished_at, duration_ms, peak_rss_bytes,
    seq_run, rev, queue, created_at, updated_at)
values (
    :job_id, :tenant_id, :status, coalesce(:progress, 0), :progress_message, :attempt,
    :max_attempts, :error, :result, :worker_id, :queued_at, :started_at, :finished_at,
    :duration_ms, :peak_rss_bytes, :seq_run, :rev, :queue, :now, :now)
on conflict (job_id) do update set
    status = excluded.status,
    progress = excluded.progress,
    progress_message = excluded.progress_message,
    attempt = excluded.attempt,
    max_attempts = excluded.max_attempts,
    error = excluded.error,
    result = excluded.result,
    worker_id = excluded.worker_id,
    queued_at = excluded.queued_at,
    started_at = excluded.started_at,
    finished_at = excluded.finished_at,
    duration_ms = excluded.duration_ms,
    peak_rss_bytes = excluded.peak_rss_bytes,
    seq_run = excluded.seq_run,
    rev = excluded.rev,
    queue = coalesce(excluded.queue, queue),
    updated_at = excluded.updated_at
where tenant_id = excluded.tenant_id and case
    when :replaces_rev is null then (excluded.seq_run, excluded.rev) > (seq_run, rev)
    else (seq_run, rev) = (:replaces_seq_run, :replaces_rev)
end
"""

_FETCH = "select {} from ingestion_jobs where job_id = ?".format(", ".join(COLUMNS))
_UNSETTLED = (
    "select {} from ingestion_jobs where queue = ? and status in ({}) and job_id > ?"
    " and updated_at < ? order by job_id limit ?"
).format(", ".join(COLUMNS), ", ".join(f"'{s}'" for s in UNSETTLED))


def _row(values: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(COLUMNS, values, strict=True))
    if out["result"] is not None:
        out["result"] = json.loads(out["result"])
    return out


def _params(u: StatusUpdate) -> dict[str, Any]:
    p = u.to_json()
    p["result"] = None if u.result is None else json.dumps(u.result)
    p["now"] = time.time()
    return p


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path, *, timeout_s: float = 5.0) -> None:
        self.path = path
        self._timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        # One connection used from worker threads, one call at a time.
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
            )
            try:
                self._setup(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL takes an exclusive lock without waiting on the busy timeout,
        # so two processes opening a new file at once retry here until the timeout.
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                conn.execute("pragma journal_mode=wal")
                conn.executescript(_SCHEMA)
                columns = {r[1] for r in conn.execute("pragma table_info(ingestion_jobs)")}
                for name, kind in _ADDED_COLUMNS:  # a file made by an older version
                    if name not in columns:
                        conn.execute(f"alter table ingestion_jobs add column {name} {kind}")
                conn.execute(_QUEUE_INDEX)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _apply_sync(self, updates: Sequence[StatusUpdate]) -> int:
        with self._lock:
            conn = self._connection()
            # Same lock order as the PostgreSQL function, and one transaction per batch.
            ordered = sorted(updates, key=lambda u: (u.job_id, u.key))
            changed = 0
            conn.execute("begin immediate")
            try:
                for u in ordered:
                    changed += conn.execute(_UPSERT, _params(u)).rowcount
                conn.execute("commit")
            except BaseException:
                conn.execute("rollback")
                raise
            return changed

    def _fetch_sync(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._connection().execute(_FETCH, [job_id]).fetchone()
        return None if row is None else _row(row)

    def _unsettled_sync(
        self, queue: str, after: str, limit: int, older_than_s: float
    ) -> list[dict[str, Any]]:
        before = time.time() - older_than_s
        with self._lock:
            conn = self._connection()
            rows = conn.execute(_UNSETTLED, [queue, after, before, limit]).fetchall()
        return [_row(r) for r in rows]

    def _versions_sync(self, job_ids: list[str]) -> dict[str, RowVersion]:
        out: dict[str, RowVersion] = {}
        with self._lock:
            conn = self._connection()
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for job_id, run, rev, tenant, status, attempt, queue, started in conn.execute(
                    "select job_id, seq_run, rev, tenant_id, status, attempt, queue, started_at"
                    f" from ingestion_jobs where job_id in ({marks})",
                    chunk,
                ):
                    out[job_id] = RowVersion(
                        float(run),
                        int(rev),
                        str(tenant),
                        str(status),
                        int(attempt),
                        None if queue is None else str(queue),
                        None if started is None else float(started),
                    )
        return out

    async def fetch_versions(self, job_ids: Sequence[str]) -> dict[str, RowVersion]:
        try:
            return await asyncio.to_thread(self._versions_sync, list(job_ids))
        except sqlite3.Error as exc:
            raise StatusStoreError(f"status store error: {exc}") from exc

    async def apply(self, updates: Sequence[StatusUpdate]) -> int:
        if not updates:
            return 0
        try:
            return await asyncio.to_thread(self._apply_sync, list(updates))
        except sqlite3.IntegrityError as exc:
            raise StatusStoreError(f"status store rejected: {exc}", permanent=True) from exc
        except sqlite3.Error as exc:
            raise StatusStoreError(f"status store error: {exc}") from exc

    async def fetch(self, job_id: str) -> dict[str, Any] | None:
        try:
            return await asyncio.to_thread(self._fetch_sync, job_id)
        except sqlite3.Error as exc:
            raise StatusStoreError(f"status store error: {exc}") from exc

    async def fetch_unsettled(
        self, queue: str, after: str, limit: int, older_than_s: float
    ) -> list[dict[str, Any]]:
        try:
            return await asyncio.to_thread(self._unsettled_sync, queue, after, limit, older_than_s)
        except sqlite3.Error as exc:
            raise StatusStoreError(f"status store error: {exc}") from exc

    def _close_sync(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close_sync)
