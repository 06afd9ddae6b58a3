"""Status store over a direct PostgreSQL connection (Supabase's own database URL or any
PostgreSQL with the migration applied): calls the same `apply_job_status()` the RPC does."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from supervisor.status.backend import COLUMNS, UNSETTLED, RowVersion, StatusStoreError
from supervisor.status.update import StatusUpdate

log = logging.getLogger(__name__)


_VERSIONS = (
    "select job_id, seq_run, rev, tenant_id, status, attempt,"
    " extract(epoch from started_at)::float8{} from public.ingestion_jobs"
    " where job_id = any(%s)"
)
# The queue column is read through the row's JSON here, so a row is read alike before the
# migration that adds it (20261201000600): it then reads as null.
_FETCH = "select {} from public.ingestion_jobs j where job_id = %s".format(
    ", ".join("(to_jsonb(j) ->> 'queue')" if c == "queue" else c for c in COLUMNS)
)
_UNSETTLED = (
    "select {} from public.ingestion_jobs where queue = %s and status in ({})"
    " and job_id > %s and updated_at < now() - %s * interval '1 second'"
    " order by job_id limit %s"
).format(", ".join(COLUMNS), ", ".join(f"'{s}'" for s in UNSETTLED))


def _row(values: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(COLUMNS, values, strict=True):
        out[name] = value.timestamp() if isinstance(value, datetime) else value
    return out


class PostgresBackend:
    name = "postgres"

    def __init__(self, dsn: str, *, timeout_s: float = 5.0) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            # prepare_threshold=None: Supabase's transaction pooler cannot keep prepared
            # statements across transactions.
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                connect_timeout=max(1, int(self._timeout_s)),
                autocommit=False,
                prepare_threshold=None,
                application_name="ingest-supervisor-status",
            )
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                log.debug("closing a broken status connection failed", exc_info=True)

    async def _run(self, sql: str, params: Sequence[Any], *, many: bool = False) -> Any:
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout_s):
                    conn = await self._connection()
                    async with conn.transaction():
                        # The server gives up too, so a timed-out batch holds no row locks.
                        await conn.execute(
                            "select set_config('statement_timeout', %s, true)",
                            [str(int(self._timeout_s * 1000))],
                        )
                        cur = await conn.execute(sql, params)  # type: ignore[arg-type]
                        return await (cur.fetchall() if many else cur.fetchone())
            except TimeoutError:
                await self._drop_connection()
                raise StatusStoreError("status store timed out", timed_out=True) from None
            except psycopg.Error as exc:
                state = getattr(exc, "sqlstate", None) or ""
                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
                    await self._drop_connection()
                raise StatusStoreError(
                    f"status store error {state or type(exc).__name__}", sqlstate=state
                ) from exc
            except OSError as exc:
                await self._drop_connection()
                raise StatusStoreError(f"status store unreachable: {exc}") from exc

    async def apply(self, updates: Sequence[StatusUpdate]) -> int:
        if not updates:
            return 0
        body = json.dumps([u.to_json() for u in updates])
        row = await self._run("select public.apply_job_status(%s::jsonb)", [body])
        return int(row[0]) if row else 0

    async def fetch(self, job_id: str) -> dict[str, Any] | None:
        row = await self._run(_FETCH, [job_id])
        return None if row is None else _row(row)

    async def fetch_versions(self, job_ids: Sequence[str]) -> dict[str, RowVersion]:
        if not job_ids:
            return {}
        try:
            rows = await self._run(_VERSIONS.format(", queue"), [list(job_ids)], many=True)
        except StatusStoreError as exc:
            if not exc.missing_column:  # not a table without the queue column yet
                raise
            rows = await self._run(_VERSIONS.format(", null"), [list(job_ids)], many=True)
        return {
            r[0]: RowVersion(float(r[1]), int(r[2]), str(r[3]), str(r[4]), int(r[5]), r[7], r[6])
            for r in rows
        }

    async def fetch_unsettled(
        self, queue: str, after: str, limit: int, older_than_s: float
    ) -> list[dict[str, Any]]:
        params = [queue, after, older_than_s, limit]
        return [_row(r) for r in await self._run(_UNSETTLED, params, many=True)]

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop_connection()
