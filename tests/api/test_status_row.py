"""A job enqueued through the API gets its `queued` row from the status outbox, written by
a daemon's projector: the API itself needs no status store settings, and secrets in the
payload never reach the row."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from supervisor.queue.jobqueue import JobQueue
from supervisor.status.service import StatusService
from supervisor.status.sqlite_backend import SqliteBackend
from tests.api.conftest import ServerFactory, job
from tests.conftest import REDIS_URL


async def _row(backend: SqliteBackend, job_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        row = await backend.fetch(job_id)
        if row is not None:
            return row
        assert time.monotonic() < deadline, f"no status row for {job_id}"
        await asyncio.sleep(0.02)


async def test_queued_rows_for_single_and_batch_enqueues(
    api_server: ServerFactory, tmp_path: Path
) -> None:
    server = api_server()  # no INGEST_STATUS_* at all
    one = job(max_attempts=4, data_source={"type": "text", "trial_token": "tt-row-secret"})
    many = [job(), job()]
    with server.client() as http:
        assert (await asyncio.to_thread(http.post, "/jobs", json=one)).status_code == 202
        r = await asyncio.to_thread(http.post, "/jobs:batch", json={"jobs": many})
        assert r.status_code == 202
    client = Redis.from_url(REDIS_URL)
    backend = SqliteBackend(tmp_path / "status.sqlite3")
    service = StatusService(JobQueue(client, server.queue), backend, consumer="projector-1")
    service.start()
    try:
        row = await _row(backend, one["job_id"])
        assert row["status"] == "queued" and row["max_attempts"] == 4
        assert row["tenant_id"] == "tenant-a"
        assert "tt-row-secret" not in repr(row)
        for j in many:
            assert (await _row(backend, j["job_id"]))["status"] == "queued"
    finally:
        await service.aclose(5.0)
        await client.aclose()
