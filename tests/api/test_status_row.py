"""The API writes the `queued` status row of a new job through the status store, off the
response path; a repeat enqueue writes nothing new."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from supervisor.status.sqlite_backend import SqliteBackend
from tests.api.conftest import ServerFactory, job


async def _row(backend: SqliteBackend, job_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        row = await backend.fetch(job_id)
        if row is not None:
            return row
        assert time.monotonic() < deadline, f"no status row for {job_id}"
        await asyncio.sleep(0.02)


async def test_queued_rows_written_for_single_and_batch(
    api_server: ServerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "status.sqlite3"
    server = api_server(INGEST_STATUS_BACKEND="sqlite", INGEST_STATUS_SQLITE_PATH=str(path))
    one = job(max_attempts=4, data_source={"type": "text", "trial_token": "tt-row-secret"})
    many = [job(), job()]
    with server.client() as http:
        assert (await asyncio.to_thread(http.post, "/jobs", json=one)).status_code == 202
        r = await asyncio.to_thread(http.post, "/jobs:batch", json={"jobs": many})
        assert r.status_code == 202
    backend = SqliteBackend(path)
    try:
        row = await _row(backend, one["job_id"])
        assert row["status"] == "queued" and row["max_attempts"] == 4
        assert row["tenant_id"] == "tenant-a"
        assert "tt-row-secret" not in repr(row)
        for j in many:
            assert (await _row(backend, j["job_id"]))["status"] == "queued"
    finally:
        await backend.aclose()
