"""Status store through the official `supabase` client: one `.rpc('apply_job_status')`
per batch, with the service-role key, an explicit timeout on every request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from supervisor.queue.payload import strict_json
from supervisor.status.backend import (
    COLUMNS,
    TIME_COLUMNS,
    UNSETTLED,
    RowVersion,
    StatusStoreError,
)
from supervisor.status.update import StatusUpdate

log = logging.getLogger(__name__)

RPC_NAME = "apply_job_status"


def _seconds(value: Any) -> Any:
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return value


def _row(raw: dict[str, Any]) -> dict[str, Any]:
    return {c: (_seconds(raw.get(c)) if c in TIME_COLUMNS else raw.get(c)) for c in COLUMNS}


class SupabaseBackend:
    name = "supabase"

    def __init__(self, url: str, key: str, *, timeout_s: float = 5.0) -> None:
        self._url = url
        self._key = key
        self._timeout_s = timeout_s
        self._client: Any = None
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    async def _get_client(self) -> Any:
        async with self._lock:
            if self._client is None:
                from supabase import AsyncClientOptions, acreate_client

                # Our own http client: the explicit timeout lives there, and we close it.
                self._http = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout_s))
                options = AsyncClientOptions(
                    httpx_client=self._http,
                    postgrest_client_retry=False,  # the projector retries, with backoff
                    auto_refresh_token=False,
                    persist_session=False,
                )
                self._client = await acreate_client(self._url, self._key, options=options)
            return self._client

    async def _execute(self, builder_factory: Any) -> Any:
        from postgrest.exceptions import APIError

        try:
            async with asyncio.timeout(self._timeout_s + 1.0):
                client = await self._get_client()
                return (await builder_factory(client).execute()).data
        except TimeoutError:
            raise StatusStoreError("status store timed out", timed_out=True) from None
        except APIError as exc:
            code = str(exc.code or "")
            raise StatusStoreError(
                f"status store refused: {code} {exc.message or ''}".strip(),
                sqlstate=code,
            ) from None
        except httpx.HTTPError as exc:
            raise StatusStoreError(f"status store unreachable: {type(exc).__name__}") from None

    async def apply(self, updates: Sequence[StatusUpdate]) -> int:
        if not updates:
            return 0
        body = {"updates": [u.to_json() for u in updates]}
        try:  # as the client will encode it
            strict_json(body)
        except (ValueError, TypeError) as exc:  # NaN, a lone surrogate: no retry helps
            raise StatusStoreError(f"status rows are not JSON: {exc}", permanent=True) from None
        data = await self._execute(lambda c: c.rpc(RPC_NAME, body))
        return int(data) if isinstance(data, int | float) else 0

    async def fetch(self, job_id: str) -> dict[str, Any] | None:
        data = await self._execute(
            lambda c: c.table("ingestion_jobs").select("*").eq("job_id", job_id).limit(1)
        )
        return _row(data[0]) if data else None

    async def fetch_versions(self, job_ids: Sequence[str]) -> dict[str, RowVersion]:
        out: dict[str, RowVersion] = {}
        ids = list(job_ids)
        # Bounded URL length: job ids are at most 128 characters.
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            for r in await self._versions(chunk):
                out[r["job_id"]] = RowVersion(
                    float(r["seq_run"]),
                    int(r["rev"]),
                    str(r["tenant_id"]),
                    str(r["status"]),
                    int(r["attempt"]),
                    r.get("queue"),
                    _seconds(r.get("started_at")),
                )
        return out

    async def _versions(self, chunk: list[str]) -> list[dict[str, Any]]:
        columns = "job_id,seq_run,rev,tenant_id,status,attempt,started_at"
        try:
            data = await self._execute(
                lambda c: c.table("ingestion_jobs").select(f"{columns},queue").in_("job_id", chunk)
            )
        except StatusStoreError as exc:
            if not exc.missing_column:  # not a table without the queue column yet
                raise
            data = await self._execute(
                lambda c: c.table("ingestion_jobs").select(columns).in_("job_id", chunk)
            )
        return list(data or [])

    async def fetch_unsettled(
        self, queue: str, after: str, limit: int, older_than_s: float
    ) -> list[dict[str, Any]]:
        # PostgREST filters on no server clock: this host's, minus the age.
        before = datetime.fromtimestamp(time.time() - older_than_s, UTC).isoformat()
        data = await self._execute(
            lambda c: (
                c.table("ingestion_jobs")
                .select("*")
                .eq("queue", queue)
                .in_("status", list(UNSETTLED))
                .gt("job_id", after)
                .lt("updated_at", before)
                .order("job_id")
                .limit(limit)
            )
        )
        return [_row(r) for r in data or []]

    async def aclose(self) -> None:
        self._client = None
        http, self._http = self._http, None
        if http is not None:
            try:
                await http.aclose()
            except Exception:
                log.debug("closing the supabase http client failed", exc_info=True)
