"""Rows another session holds locked (`select ... for update` left open in the SQL editor):
parked with their snapshot, written by the reconciler once free, whatever became of the
job in Redis meanwhile, and never in the way of the reconciler's other writes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from supervisor.queue.jobqueue import JobQueue
from supervisor.status import StatusBackend
from supervisor.status.lost import LOST_ERROR
from supervisor.status.parked import ParkedRows, write_parked
from supervisor.status.projector import StatusProjector
from supervisor.status.reconcile import sweep_page
from supervisor.status.sync import status_sync
from supervisor.status.update import StatusUpdate
from tests.status.conftest import Store
from tests.status.snapshots import claim_now, payload


def _locking(store: Store) -> str:
    if store.dsn is None:
        pytest.skip("a lock on one row: SQLite locks the whole file (the outage tests)")
    return store.dsn


@asynccontextmanager
async def row_locked(dsn: str, job_id: str) -> AsyncIterator[None]:
    """Another session holds the row's lock until the block ends."""
    conn = await psycopg.AsyncConnection.connect(dsn)
    try:
        await conn.execute(
            "select 1 from public.ingestion_jobs where job_id = %s for update", (job_id,)
        )
        yield
    finally:
        await conn.rollback()
        await conn.close()


async def drain(queue: JobQueue, backend: StatusBackend) -> None:
    assert await StatusProjector(queue.client, queue.keys, backend, consumer="p").drain(20.0)


async def parked_fields(queue: JobQueue) -> int:
    return len(await ParkedRows(queue.client, queue.keys).jobs())


async def row(backend: StatusBackend, job_id: str) -> dict[str, Any]:
    found = await backend.fetch(job_id)
    assert found is not None, job_id
    return found


async def test_a_final_row_parked_before_its_job_was_purged_is_still_written(
    store: Store, queue: JobQueue
) -> None:
    """The job completes while its row is locked, and an operator purges completed jobs
    before the lock is let go: the row says completed once it is free, and the sweep for
    jobs Redis lost leaves it so."""
    dsn = _locking(store)
    backend = store.backend()
    try:
        await queue.enqueue(payload("done-then-purged"))
        claim = await claim_now(queue, "w")
        await drain(queue, backend)
        async with row_locked(dsn, "done-then-purged"):
            assert await queue.complete("done-then-purged", claim.token, {"n": 1}, message="ok")
            await drain(queue, backend)  # the completion meets the lock: parked
            assert await parked_fields(queue) == 1
            assert await queue.purge("completed") == 1
            assert await write_parked(queue, backend) == 0  # still locked: stays parked
            assert await parked_fields(queue) == 1
        assert await write_parked(queue, backend) == 1
        assert await parked_fields(queue) == 0
        await sweep_page(queue, backend, limit=100, lost_after_s=0.0)
        written = await row(backend, "done-then-purged")
        assert (written["status"], written["error"]) == ("completed", None), written
        assert written["progress_message"] == "ok"
    finally:
        await backend.aclose()


async def test_a_waiting_job_purged_while_its_row_was_locked_shows_cancelled(
    store: Store, queue: JobQueue
) -> None:
    """Its `cancelled` row is parked; the sweep for jobs Redis lost, which finds the job
    gone from Redis, leaves the row alone until the parked row is written."""
    dsn = _locking(store)
    backend = store.backend()
    try:
        await queue.enqueue(payload("purged-waiting"))
        await drain(queue, backend)
        async with row_locked(dsn, "purged-waiting"):
            assert await queue.purge("waiting") == 1
            await drain(queue, backend)
        await sweep_page(queue, backend, limit=100, lost_after_s=0.0)
        assert (await row(backend, "purged-waiting"))["status"] == "queued"  # not lost
        assert await write_parked(queue, backend) == 1
        await sweep_page(queue, backend, limit=100, lost_after_s=0.0)
        written = await row(backend, "purged-waiting")
        assert written["status"] == "cancelled", written
        assert written["error"] != LOST_ERROR
    finally:
        await backend.aclose()


class _WriteThenStep:
    """A real store whose first write is followed by `step`: a projector's turn landing
    between the reconciler's write of a parked row and its removal from the parked rows."""

    def __init__(self, inner: StatusBackend, step: Callable[[], Awaitable[None]]) -> None:
        self.inner = inner
        self.step: Callable[[], Awaitable[None]] | None = step

    async def apply(self, rows: list[StatusUpdate]) -> int:
        written = await self.inner.apply(rows)
        if self.step is not None:
            step, self.step = self.step, None
            await step()
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_row_parked_while_the_reconciler_writes_an_older_one_is_kept(
    store: Store, queue: JobQueue
) -> None:
    """The reconciler writes a job's parked progress row; meanwhile a projector still
    parking that job's entries parks its completion. The completion stays parked (it is
    another entry) and is written by the next sweep."""
    dsn = _locking(store)
    backend = store.backend()
    projector = StatusProjector(queue.client, queue.keys, backend, consumer="p")
    try:
        await queue.enqueue(payload("raced"))
        claim = await claim_now(queue, "w")
        await projector.drain(20.0)
        async with row_locked(dsn, "raced"):
            await queue.progress("raced", claim.token, 50, "half")
            await projector.drain(20.0)  # parked; its later entries are parked unwritten
        assert await parked_fields(queue) == 1

        async def projector_parks_the_completion() -> None:
            assert await queue.complete("raced", claim.token, {"n": 1}, message="done")
            assert await projector.drain(20.0)

        hooked: Any = _WriteThenStep(backend, projector_parks_the_completion)
        assert await write_parked(queue, hooked) == 1  # the progress row
        assert await parked_fields(queue) == 1  # the completion, still to write
        assert await write_parked(queue, backend) == 1
        assert (await row(backend, "raced"))["status"] == "completed"
        assert await parked_fields(queue) == 0
    finally:
        await backend.aclose()


async def test_a_locked_row_does_not_stop_the_rows_of_lost_jobs_being_marked(
    store: Store, queue: JobQueue
) -> None:
    """Redis lost two jobs; one's row is locked. The other is marked lost at once, the
    sweep does not fail and goes on through the table, and the locked one is marked on
    the next pass once it is free."""
    dsn = _locking(store)
    backend = store.backend()
    try:
        await queue.enqueue(payload("lost-free"))
        await queue.enqueue(payload("lost-locked"))
        await drain(queue, backend)
        keys = [k async for k in queue.client.scan_iter(match=queue.keys.pattern)]
        await queue.client.delete(*keys)  # a Redis restarted without persistence
        async with row_locked(dsn, "lost-locked"):
            report = await sweep_page(queue, backend, limit=100, lost_after_s=0.0)
            assert (await row(backend, "lost-free"))["error"] == LOST_ERROR
        assert (await row(backend, "lost-locked"))["status"] == "queued"
        assert report.lost == ["lost-free"]
        marked: list[str] = []
        for _ in range(3):  # the rest of this pass, then the next one from the start
            marked += (await sweep_page(queue, backend, limit=100, lost_after_s=0.0)).lost
        assert marked == ["lost-locked"]
        assert (await row(backend, "lost-locked"))["error"] == LOST_ERROR
    finally:
        await backend.aclose()


async def test_a_row_parked_late_never_replaces_a_newer_one(queue: JobQueue) -> None:
    """A dead projector's entries are taken over by another one later; if that job is
    parked, its older snapshot must not push out the newer one parked before."""
    parked = ParkedRows(queue.client, queue.keys)
    newer = StatusUpdate("late", "t", "completed", rev=7, seq_run=100.5, result={"n": 1})
    older = StatusUpdate("late", "t", "processing", rev=6, seq_run=100.5, progress=50.0)
    other_run = StatusUpdate("late", "t", "queued", rev=9, seq_run=99.25)
    await parked.park([newer])
    await parked.park([older, other_run])
    [(row, _value)] = await parked.draw(20)
    assert row == newer
    await parked.park([dataclasses.replace(newer, rev=8, status="failed")])
    [(row, _value)] = await parked.draw(20)
    assert (row.rev, row.status) == (8, "failed")


async def test_a_parked_value_that_is_no_row_is_dropped_and_the_rest_written(
    queue: JobQueue, sqlite_backend: StatusBackend
) -> None:
    """Bytes that are not UTF-8, JSON that is no row: each is dropped with an error, never
    stopping the sweep; a row from a newer version with a column this one does not know
    is written without it."""
    newer = StatusUpdate("from-newer", "t", "completed", rev=3, seq_run=10.0).to_json()
    newer["a_column_of_a_later_version"] = 1
    values: dict[str, Any] = {
        "not-utf8": b"1.0 1\n\xff\xfe",
        "not-a-row": "1.0 1\n[1, 2]",
        "from-newer": "10.0 3\n" + json.dumps(newer),
    }
    await queue.client.hset(queue.keys.status_parked_rows, mapping=values)
    assert await write_parked(queue, sqlite_backend) == 1
    assert await ParkedRows(queue.client, queue.keys).jobs() == set()
    assert (await row(sqlite_backend, "from-newer"))["status"] == "completed"


async def test_a_table_locked_whole_costs_a_sweep_a_few_lock_timeouts_not_one_per_row(
    store: Store, queue: JobQueue
) -> None:
    """A migration waiting for the whole table locks every row: the sweep's parked rows
    stop after the third still locked, rather than spending a lock timeout on each."""
    dsn = _locking(store)
    backend = store.backend()
    parked = ParkedRows(queue.client, queue.keys)
    try:
        rows = [StatusUpdate(f"parked-{i}", "t", "queued", rev=1, seq_run=1.0) for i in range(8)]
        await parked.park(rows)
        conn = await psycopg.AsyncConnection.connect(dsn)
        try:
            await conn.execute("lock table public.ingestion_jobs in access exclusive mode")
            started = time.monotonic()
            assert await write_parked(queue, backend) == 0
            took = time.monotonic() - started
        finally:
            await conn.rollback()
            await conn.close()
        assert took < 6.0, f"{took:.1f}s"
        assert len(await parked.jobs()) == 8
        assert await write_parked(queue, backend) == 8
    finally:
        await backend.aclose()


async def test_status_sync_parks_a_stale_row_it_finds_locked_and_goes_on(
    store: Store, queue: JobQueue
) -> None:
    """`ingestctl status-sync` writes every stale row it can; one it finds locked is
    parked, not dropped, and written by a later sweep once free."""
    dsn = _locking(store)
    backend = store.backend()
    try:
        for job_id in ("sync-held", "sync-free"):
            await queue.enqueue(payload(job_id))
        await drain(queue, backend)
        for job_id in ("sync-held", "sync-free"):  # their rows fall behind: outbox dropped
            claim = await queue.claim("w", lease_s=30, timeout_s=5)
            assert claim is not None and claim.job.job_id == job_id
        await queue.client.delete(queue.keys.status_outbox)
        async with row_locked(dsn, "sync-held"):
            report = await status_sync(queue, backend)
            assert (await row(backend, "sync-free"))["status"] == "processing"
            assert sorted(report.behind) == ["sync-free", "sync-held"]
        assert (await row(backend, "sync-held"))["status"] == "queued"
        assert await parked_fields(queue) == 1
        assert await write_parked(queue, backend) == 1
        assert (await row(backend, "sync-held"))["status"] == "processing"
    finally:
        await backend.aclose()


async def test_a_job_parked_once_is_tried_again_when_its_parking_ends(
    store: Store, queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row locked for a moment parks its job for PARK_S; the job's later entries,
    parked meanwhile without being tried, must not keep the parking going: once it has
    ended, the next entry is written by the projector itself, not left to the
    reconciler's slower sweep."""
    dsn = _locking(store)
    monkeypatch.setattr("supervisor.status.projector.PARK_S", 0.3)
    backend = store.backend()
    projector = StatusProjector(queue.client, queue.keys, backend, consumer="p")
    try:
        await queue.enqueue(payload("busy"))
        claim = await claim_now(queue, "w")
        assert await projector.drain(20.0)
        async with row_locked(dsn, "busy"):
            assert await queue.progress("busy", claim.token, 5, "five")
            assert await projector.drain(20.0)  # met the lock: parked
        assert await parked_fields(queue) == 1
        # The job reports more often than PARK_S, as a crawl does.
        deadline = time.monotonic() + 5.0
        percent = 5
        while (await row(backend, "busy"))["progress"] != percent:
            assert time.monotonic() < deadline, "the projector never tried the row again"
            percent = min(percent + 1, 99)
            assert await queue.progress("busy", claim.token, percent, f"at {percent}")
            assert await projector.drain(20.0)
            await asyncio.sleep(0.1)
    finally:
        await backend.aclose()
