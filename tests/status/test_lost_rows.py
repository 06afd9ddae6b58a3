"""Rows Redis can no longer vouch for: jobs it lost altogether, and runs it lost.

Redis restarted without persistence, from a file missing its last second, or failed over
asynchronously: the rows of what it lost must not say `queued` or `processing` for ever,
and a row of a run Redis no longer has must come back to the run it has. Every store.
"""

from __future__ import annotations

import pytest

from supervisor.queue.jobqueue import JobQueue
from supervisor.status import StatusBackend
from supervisor.status.lost import LOST_ERROR
from supervisor.status.projector import StatusProjector
from supervisor.status.reconcile import sweep_page
from supervisor.status.sync import status_sync
from supervisor.status.update import StatusUpdate
from tests.status.conftest import Store
from tests.status.snapshots import payload


async def drain(q: JobQueue, backend: StatusBackend) -> None:
    p = StatusProjector(q.client, q.keys, backend, consumer=f"p-{q.queue}")
    assert await p.drain(10.0)


async def forget_everything(q: JobQueue) -> None:
    """What a Redis restart without persistence does to the queue."""
    keys = [k async for k in q.client.scan_iter(match=q.keys.pattern)]
    if keys:
        await q.client.delete(*keys)


async def repair(q: JobQueue, backend: StatusBackend, how: str) -> list[str]:
    if how == "sweep":
        report = await sweep_page(q, backend, limit=100, lost_after_s=0.0)
        return sorted(report.lost)
    synced = await status_sync(q, backend, lost_after_s=0.0)
    return sorted(synced.lost)


@pytest.mark.parametrize("how", ["sweep", "status-sync"])
async def test_rows_of_jobs_redis_lost_say_so_instead_of_running_for_ever(
    store: Store, queue: JobQueue, queue_name: str, how: str
) -> None:
    backend = store.backend()
    neighbour = JobQueue(queue.client, f"{queue_name}-b")
    try:
        await queue.enqueue(payload("kept-done"))
        await neighbour.enqueue(payload("other-queue"))
        done = await queue.claim("w", lease_s=30, timeout_s=5)
        assert done is not None and done.job.job_id == "kept-done"
        assert await queue.complete("kept-done", done.token, {"n": 1})
        await queue.enqueue(payload("lost-running"))
        await queue.enqueue(payload("lost-waiting"))
        running = await queue.claim("w", lease_s=30, timeout_s=5)
        assert running is not None and running.job.job_id == "lost-running"
        await drain(queue, backend)
        await drain(neighbour, backend)
        # A row written before rows knew their queue: nobody can tell whose it is.
        await backend.apply([StatusUpdate("no-queue", "t1", "queued", seq_run=1.0, rev=1)])
        await forget_everything(queue)

        assert await repair(queue, backend, how) == ["lost-running", "lost-waiting"]

        for job_id in ("lost-running", "lost-waiting"):
            row = await backend.fetch(job_id)
            assert row is not None and row["status"] == "failed", row
            assert row["error"] == LOST_ERROR and row["finished_at"] is not None
        kept = await backend.fetch("kept-done")
        assert kept is not None and kept["status"] == "completed"  # final rows stay
        other = await backend.fetch("other-queue")
        assert other is not None and other["status"] == "queued"  # another queue's job
        untold = await backend.fetch("no-queue")
        assert untold is not None and untold["status"] == "queued"
        assert await repair(queue, backend, how) == []  # once
    finally:
        await forget_everything(neighbour)
        await backend.aclose()


async def test_a_lost_row_yields_to_any_later_snapshot_of_its_job(
    store: Store, queue: JobQueue
) -> None:
    """The lost mark keeps the row's key: whatever the job's own outbox still holds (a
    purge's cancelled row projected late) or a later run replaces it."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("late"))
        await drain(queue, backend)
        await forget_everything(queue)
        assert await repair(queue, backend, "sweep") == ["late"]
        await queue.enqueue(payload("late"))  # enqueued again: a new run
        await drain(queue, backend)
        row = await backend.fetch("late")
        assert row is not None and row["status"] == "queued" and row["error"] is None
    finally:
        await backend.aclose()


@pytest.mark.parametrize("how", ["sweep", "status-sync"])
async def test_a_row_of_a_run_redis_lost_comes_back_to_the_run_it_has(
    store: Store, queue: JobQueue, how: str
) -> None:
    """An operator's retry started a new run, it was projected, and Redis lost it: the
    row shows a run that no longer exists and will never run."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("retried"))
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None
        await queue.fail("retried", claim.token, "exit 65", retryable=False, attempt=1)
        saved = await queue.client.hget(queue.keys.jobs, "retried")
        assert await queue.retry("retried") == "requeued"
        await drain(queue, backend)
        row = await backend.fetch("retried")
        assert row is not None and row["status"] == "queued"
        # Redis comes back with the failed record only.
        await queue.client.zrem(queue.keys.waiting, "retried")
        await queue.client.zadd(queue.keys.failed, {"retried": 1})
        await queue.client.hset(queue.keys.jobs, "retried", saved)
        if how == "sweep":
            report = await sweep_page(queue, backend, limit=100)
            assert report.ahead == ["retried"], report
        else:
            synced = await status_sync(queue, backend)
            assert synced.ahead == ["retried"] and synced.written == 1, synced
        row = await backend.fetch("retried")
        assert row is not None and row["status"] == "failed" and row["error"] == "exit 65"
    finally:
        await backend.aclose()


@pytest.mark.parametrize("how", ["sweep", "status-sync"])
async def test_a_lost_job_s_row_says_so_though_another_tenant_reused_its_id(
    store: Store, queue: JobQueue, how: str
) -> None:
    """Redis lost tenant A's running job, then tenant B enqueued a job of the same id.
    Redis has *a* job of that id, but not A's: A's row must not say `processing` for ever,
    and nothing of B's job may reach A's row."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("reused", tenant="tenant-a"))
        running = await queue.claim("w", lease_s=30, timeout_s=5)
        assert running is not None
        await drain(queue, backend)
        await forget_everything(queue)
        await queue.enqueue(payload("reused", tenant="tenant-b", max_attempts=1))
        await drain(queue, backend)  # B's row is refused: the id's row is A's

        assert await repair(queue, backend, how) == ["reused"]

        row = await backend.fetch("reused")
        assert row is not None and (row["tenant_id"], row["status"]) == ("tenant-a", "failed")
        assert row["error"] == LOST_ERROR and row["max_attempts"] == 3  # A's, not B's
        assert await repair(queue, backend, how) == []  # once
    finally:
        await backend.aclose()


# Records no script can read (see tests/protocol/test_states.py), and readable ones whose
# numbers are not whole.
ODD_RECORDS = [
    b"\xff not json",
    b"[1]",
    b'{"id": "a-unreadable", "state": "waiting", "attempt": "x", "max_attempts": 1}',
    b'{"id": "a-unreadable", "state": "waiting", "attempt": {"a": 1}, "max_attempts": 1}',
    b'{"id": "a-unreadable", "state": "waiting", "attempt": 0, "max_attempts": 1, '
    b'"enqueued_at": "x"}',
    b'{"id": "a-unreadable", "state": "waiting", "attempt": 0, "max_attempts": 1, "rev": 1.5}',
    b'{"id": "a-unreadable", "state": "waiting", "attempt": 0.5, "max_attempts": 1}',
    b'{"id": "a-unreadable", "state": "waiting", "attempt": 0, "max_attempts": 1, "rev": 1e400}',
    b'{"id": "a-unreadable", "state": "active", "attempt": 1, "max_attempts": 1, '
    b'"started_at": null}',
    b'{"id": "a-unreadable", "state": "active", "attempt": 1, "max_attempts": 1, '
    b'"started_at": "x"}',
    b'{"id": "a-unreadable", "state": "failed", "attempt": 1, "max_attempts": 1, '
    b'"finished_at": "x"}',
]


@pytest.mark.parametrize("record", ODD_RECORDS)
@pytest.mark.parametrize("how", ["sweep", "status-sync"])
async def test_a_record_redis_cannot_read_stops_no_look_for_lost_rows(
    store: Store, queue: JobQueue, record: bytes, how: str
) -> None:
    """A job whose record is unreadable is still a job Redis has: its row is left, and
    the rows after it are still looked at (the sweep's cursor is the whole fleet's: one
    record that stopped it would stop every repair of the queue)."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("a-unreadable"))
        await queue.enqueue(payload("z-lost"))
        await drain(queue, backend)
        await queue.client.hset(queue.keys.jobs, "a-unreadable", record)
        await queue.client.hdel(queue.keys.jobs, "z-lost")
        assert await repair(queue, backend, how) == ["z-lost"]
        row = await backend.fetch("a-unreadable")
        assert row is not None and row["status"] == "queued"
    finally:
        await backend.aclose()


@pytest.mark.parametrize("how", ["sweep", "status-sync"])
async def test_a_table_without_the_queue_column_still_gets_every_other_repair(
    pg_dsn: str, queue: JobQueue, how: str
) -> None:
    """Before migration 20261201000600 is applied rows cannot say whose they are: nothing
    is taken for lost, and the repairs that need no queue go on as before."""
    from supervisor.status import build_status_backend
    from tests.status.supabase_stubs import STATUS_MIGRATIONS, prepare_database

    prepare_database(pg_dsn, *(m for m in STATUS_MIGRATIONS if m.name < "20261201000600"))
    backend = build_status_backend("postgres", dsn=pg_dsn)
    try:
        await queue.enqueue(payload("old-table"))
        assert await repair(queue, backend, how) == []
        row = await backend.fetch("old-table")  # missing, re-sent or written
        if how == "sweep":
            await drain(queue, backend)
            row = await backend.fetch("old-table")
        assert row is not None and row["status"] == "queued" and row["queue"] is None
    finally:
        await backend.aclose()
