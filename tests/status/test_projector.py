"""The projector, reconciler and outbox bounds against the real Redis and real stores."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from redis.asyncio import Redis

from supervisor.queue.jobqueue import JobQueue, Retention
from supervisor.status import NoneBackend, StatusBackend
from supervisor.status.parked import ParkedRows, write_parked
from supervisor.status.projector import GROUP, StatusProjector
from supervisor.status.reconcile import sweep_page
from supervisor.status.reporting import ProjectorHooks
from supervisor.status.service import StatusService
from supervisor.status.sync import status_sync
from supervisor.status.trim import outbox_state, trim_outbox
from tests.conftest import REDIS_URL
from tests.redis_server import SERVERS, PrivateRedis
from tests.status.conftest import Store
from tests.status.snapshots import payload
from tests.waiting import until


def projector(queue: JobQueue, backend: StatusBackend, name: str, **kw: Any) -> StatusProjector:
    return StatusProjector(queue.client, queue.keys, backend, consumer=name, **kw)


async def status_of(backend: StatusBackend, job_id: str) -> str | None:
    row = await backend.fetch(job_id)
    return None if row is None else str(row["status"])


async def claimed_and_projected(
    q: JobQueue, backend: StatusBackend, job_id: str, worker: str, *, lease_s: float
) -> tuple[Any, StatusProjector]:
    """`job_id` enqueued and claimed by `worker`, its rows so far in the store; the claim
    and the projector that wrote them."""
    await q.enqueue(payload(job_id))
    claim = await q.claim(worker, lease_s=lease_s, timeout_s=5)
    assert claim is not None and claim.job.job_id == job_id
    p = projector(q, backend, "p")
    await p.drain(10.0)
    return claim, p


async def run_to_completion(queue: JobQueue, job_id: str, message: str = "done") -> None:
    claim = await queue.claim("w", lease_s=30, timeout_s=5)
    assert claim is not None and claim.job.job_id == job_id
    await queue.progress(job_id, claim.token, 40, "reading")
    assert await queue.complete(job_id, claim.token, {"n": 1}, message=message)


async def test_rows_appear_for_any_producer_and_follow_the_job(
    store: Store, queue: JobQueue
) -> None:
    backend = store.backend()
    service = StatusService(queue, backend, consumer="d1", reconcile_interval_s=3600)
    service.start()
    try:
        await queue.enqueue(payload("p-1"))  # a producer with no status settings at all
        await until(lambda: _is(backend, "p-1", "queued"))
        await run_to_completion(queue, "p-1")
        await until(lambda: _is(backend, "p-1", "completed"))
        row = await backend.fetch("p-1")
        assert row is not None and row["progress_message"] == "done"
        record = await queue.get("p-1")
        assert record is not None and record.progress_message == "done"
    finally:
        await service.aclose(5.0)


async def _took_over(heir: StatusProjector) -> bool:
    """Entries idle long enough are taken over and written (polled: idleness takes time)."""
    return bool(await heir.project(await heir._claim_stale())) and heir.stats.claimed > 0


async def _is(backend: StatusBackend, job_id: str, status: str) -> bool:
    return await status_of(backend, job_id) == status


async def test_entries_of_a_consumer_that_died_mid_batch_are_redelivered(
    queue: JobQueue, sqlite_backend: StatusBackend
) -> None:
    for i in range(5):
        await queue.enqueue(payload(f"r-{i}"))
    dead = projector(queue, sqlite_backend, "dead")
    taken = await dead._read(">", None)  # delivered to `dead`, which never acknowledges
    assert len(taken) == 5
    assert all([await status_of(sqlite_backend, f"r-{i}") is None for i in range(5)])
    heir = projector(queue, sqlite_backend, "heir", claim_idle_s=0.2)
    await until(lambda: _took_over(heir))
    assert heir.stats.claimed == 5
    for i in range(5):
        assert await status_of(sqlite_backend, f"r-{i}") == "queued"
    state = await outbox_state(queue.client, queue.keys.status_outbox)
    assert state.unprojected == 0


async def test_a_row_the_store_cannot_write_for_now_does_not_hold_back_the_rest(
    store: Store, queue: JobQueue
) -> None:
    """Another session holds one row's lock (a `select ... for update` left open in the
    SQL editor) while its job keeps changing. Every other job's row is written meanwhile,
    at once rather than after a retry per batch; nothing stays pending in the outbox (so it
    is trimmed as usual); the held job is parked, and the reconciler's next sweep writes
    its row once it is free."""
    if store.dsn is None:
        pytest.skip("a lock on one row: SQLite locks the whole file (the outage tests)")
    backend = store.backend()
    p = projector(queue, backend, "p", retry_initial_s=0.05, retry_max_s=0.2)
    blocker = await psycopg.AsyncConnection.connect(store.dsn)
    task: asyncio.Task[None] | None = None
    try:
        await queue.enqueue(payload("held"))
        await projector(queue, backend, "first").drain(10.0)
        await blocker.execute(
            "select 1 from public.ingestion_jobs where job_id = 'held' for update"
        )
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None and claim.job.job_id == "held"
        others = [f"free-{i}" for i in range(200)]
        for n, job_id in enumerate(others):
            await queue.enqueue(payload(job_id, tenant="tenant-b"))
            if n % 20 == 0:  # the held job's changes land in batch after batch
                await queue.progress("held", claim.token, n / 2, f"at {n}")
        started = time.monotonic()
        task = asyncio.create_task(p.run())

        async def others_written() -> bool:
            versions = await backend.fetch_versions(others)
            return len(versions) == len(others)

        await until(others_written, 30.0, "the other jobs' rows")
        assert time.monotonic() - started < 20.0
        assert await status_of(backend, "held") == "queued"
        assert await ParkedRows(queue.client, queue.keys).jobs() == {"held"}
        state = await outbox_state(queue.client, queue.keys.status_outbox)
        assert state.unprojected == 0, state  # nothing pending: trimming goes on
        assert await write_parked(queue, backend) == 0  # still held: stays parked
        assert await ParkedRows(queue.client, queue.keys).jobs() == {"held"}
        await blocker.rollback()
        assert await write_parked(queue, backend) == 1  # free: written, no longer parked
        assert await _is(backend, "held", "processing")
        assert await ParkedRows(queue.client, queue.keys).jobs() == set()
    finally:
        await blocker.close()
        p.stop()
        if task is not None:
            await asyncio.wait_for(task, 30.0)
        await backend.aclose()


async def test_a_parked_job_that_left_redis_leaves_the_parked_set(
    queue: JobQueue, sqlite_backend: StatusBackend
) -> None:
    """Parked by id alone (by an earlier version) and purged or past retention while its
    row was held: nothing is left to write, and the set does not keep it (it would be
    drawn again and again)."""
    await queue.enqueue(payload("still-here"))
    await queue.client.sadd(queue.keys.status_parked, "gone", "still-here")
    assert await write_parked(queue, sqlite_backend) == 1
    assert await queue.client.smembers(queue.keys.status_parked) == set()
    assert await status_of(sqlite_backend, "still-here") == "queued"


async def test_consumers_of_daemons_long_gone_are_forgotten(
    queue: JobQueue, sqlite_backend: StatusBackend
) -> None:
    """Each daemon reads the outbox under a name of its own (host, instance, pid). One
    killed, or stopped while the store was down, leaves its name in the group for ever:
    a projector forgets names idle for long that hold nothing, and only those."""
    await queue.enqueue(payload("c-1"))
    gone = projector(queue, sqlite_backend, "gone-daemon")
    await gone.project(await gone._read(">", None))  # read and acknowledged: holds nothing
    await queue.enqueue(payload("c-2"))
    holding = projector(queue, sqlite_backend, "holding-daemon")
    assert await holding._read(">", None)  # delivered, never acknowledged
    live = projector(queue, sqlite_backend, "live", forget_idle_s=0.2)
    await until(lambda: _consumer_idle_over(queue, "gone-daemon", 300), 10.0, "an idle consumer")
    await live.forget_idle_consumers()
    names = {c["name"] for c in await queue.client.xinfo_consumers(queue.keys.status_outbox, GROUP)}
    assert {_text(n) for n in names} == {"holding-daemon"}


async def _consumer_idle_over(queue: JobQueue, name: str, ms: int) -> bool:
    consumers = await queue.client.xinfo_consumers(queue.keys.status_outbox, GROUP)
    return any(_text(c["name"]) == name and int(c["idle"]) > ms for c in consumers)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def test_a_row_the_store_rejects_does_not_hold_back_the_rest(
    store: Store, queue: JobQueue
) -> None:
    backend = store.backend()
    try:
        await queue.enqueue(payload("good-1"))
        # A row no store accepts (an id the table's check refuses) and an entry that is
        # not a row at all, between good ones.
        await queue.client.xadd(
            queue.keys.status_outbox,
            {
                "job": "bad id",
                "kind": "s",
                "tenant": "t",
                "state": "waiting",
                "rev": "1",
                "run": "1000",
                "attempt": "0",
                "max": "3",
                "progress": "0",
            },
        )
        await queue.client.xadd(queue.keys.status_outbox, {"garbage": "1"})
        await queue.enqueue(payload("good-2"))
        p = projector(queue, backend, "p")
        assert await p.project(await p._read(">", None))
        assert p.stats.rejected == 1 and p.stats.bad_entries == 1
        assert await status_of(backend, "good-1") == "queued"
        assert await status_of(backend, "good-2") == "queued"
        state = await outbox_state(queue.client, queue.keys.status_outbox)
        assert state.unprojected == 0  # everything acknowledged
    finally:
        await backend.aclose()


async def test_trimming_never_drops_unacknowledged_entries(
    queue: JobQueue, sqlite_backend: StatusBackend
) -> None:
    for i in range(10):
        await queue.enqueue(payload(f"t-{i}"))
    holder = projector(queue, sqlite_backend, "holder")
    held = await holder._read(">", None)  # 10 pending, unacknowledged
    for i in range(10, 15):
        await queue.enqueue(payload(f"t-{i}"))  # 5 not yet delivered
    stream = queue.keys.status_outbox
    state = await outbox_state(queue.client, stream)
    assert state.unprojected == 15 and state.has_group
    await trim_outbox(queue.client, stream, state)
    assert await queue.client.xlen(stream) == 15
    await holder.project(held)  # the first 10 written and acknowledged
    other = projector(queue, sqlite_backend, "other")
    await other.project(await other._read(">", None))
    state = await outbox_state(queue.client, stream)
    assert state.unprojected == 0
    await trim_outbox(queue.client, stream, state)
    # Only acknowledged entries went (an exact trim keeps at most the last delivered one).
    assert await queue.client.xlen(stream) <= 15
    pending: Any = await queue.client.xpending(stream, GROUP)
    assert pending["pending"] == 0


@pytest.mark.parametrize("binary", SERVERS)
async def test_unprojected_changes_are_counted_on_every_server_version(
    tmp_path: Path, sqlite_backend: StatusBackend, binary: str
) -> None:
    """Redis 6 reports no lag for a group: the changes not yet delivered are counted."""
    server = PrivateRedis(tmp_path, persistent=False, binary=binary)
    server.start()
    queue = JobQueue(Redis.from_url(server.url), "unprojected")
    try:
        for i in range(10):
            await queue.enqueue(payload(f"u-{i}"))
        holder = projector(queue, sqlite_backend, "holder")
        await holder._read(">", None)  # 10 pending, unacknowledged
        for i in range(10, 30):
            await queue.enqueue(payload(f"u-{i}"))  # 20 not yet delivered
        state = await outbox_state(queue.client, queue.keys.status_outbox)
        assert (state.length, state.unprojected) == (30, 30), state
    finally:
        await queue.client.aclose()
        server.close()


@pytest.mark.parametrize("binary", SERVERS)
async def test_a_dead_consumers_entry_deleted_meanwhile_is_forgotten_on_every_version(
    tmp_path: Path, sqlite_backend: StatusBackend, binary: str
) -> None:
    """An operator's XDEL or XTRIM took an entry a dead consumer held: Redis 7 names it
    apart when it is taken over, Redis 6 hands it over without fields. Either way it is
    acknowledged, so it pins neither the outbox's trim point nor its age."""
    server = PrivateRedis(tmp_path, persistent=False, binary=binary)
    server.start()
    queue = JobQueue(Redis.from_url(server.url), "deleted-pending")
    try:
        for i in range(2):
            await queue.enqueue(payload(f"d-{i}"))
        taken = await projector(queue, sqlite_backend, "dead")._read(">", None)
        assert len(taken) == 2
        await queue.client.xdel(queue.keys.status_outbox, taken[0][0])
        heir = projector(queue, sqlite_backend, "heir", claim_idle_s=0.2)
        await until(lambda: _took_over(heir))
        pending: Any = await queue.client.xpending(queue.keys.status_outbox, GROUP)
        assert pending["pending"] == 0, pending
        assert await status_of(sqlite_backend, "d-1") == "queued"
        # The same under one consumer name across a restart: its own pending entries.
        for i in range(2, 4):
            await queue.enqueue(payload(f"d-{i}"))
        taken = await projector(queue, sqlite_backend, "again")._read(">", None)
        await queue.client.xdel(queue.keys.status_outbox, taken[0][0])
        assert await projector(queue, sqlite_backend, "again")._project_own_pending()
        pending = await queue.client.xpending(queue.keys.status_outbox, GROUP)
        assert pending["pending"] == 0, pending
        assert await status_of(sqlite_backend, "d-3") == "queued"
    finally:
        await queue.client.aclose()
        server.close()


async def test_the_outbox_age_is_told_on_redis_s_clock_not_the_daemon_s(
    queue: JobQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries are stamped by Redis: a daemon whose clock runs five minutes ahead must not
    report an outbox three minutes behind as eight (nor one behind as none)."""
    stream = queue.keys.status_outbox
    now_ms = await queue.server_time_ms()
    await queue.client.xadd(stream, {"job": "old"}, id=f"{now_ms - 180_000}-0")
    await queue.client.xgroup_create(stream, GROUP, id="0")
    ahead = time.time
    monkeypatch.setattr(time, "time", lambda: ahead() + 300)
    ages: list[float] = []
    hooks = ProjectorHooks(on_outbox=lambda state: ages.append(state.age_s()))
    service = StatusService(queue, NoneBackend(), consumer="skewed", hooks=hooks)
    service.start()
    try:
        await until(lambda: _true(bool(ages)), 10.0, "an outbox report")
    finally:
        await service.aclose(2.0)
    assert 179 <= ages[0] <= 200, ages


async def _true(value: bool) -> bool:
    return value


async def test_rows_parked_behind_a_lock_are_told(queue: JobQueue) -> None:
    """A parked row leaves the outbox, so its wait shows in no outbox gauge: the number
    of parked rows is reported beside them."""
    await queue.client.hset(queue.keys.status_parked_rows, "locked-1", "0 1\n{}")
    parked: list[int] = []
    hooks = ProjectorHooks(on_parked=parked.append)
    service = StatusService(queue, NoneBackend(), consumer="parks", hooks=hooks)
    service.start()
    try:
        await until(lambda: _true(bool(parked)), 10.0, "a parked-rows report")
    finally:
        await service.aclose(2.0)
    assert parked[0] == 1


async def test_without_a_status_store_the_outbox_does_not_grow(queue: JobQueue) -> None:
    """Rows older than a minute go (see the test above for why the last minute stays)."""
    service = StatusService(queue, NoneBackend(), consumer="none-1")
    old_ms = await queue.server_time_ms() - 120_000
    for i in range(5):
        await queue.client.xadd(queue.keys.status_outbox, {"x": "old"}, id=f"{old_ms}-{i}")
    for i in range(20):
        await queue.enqueue(payload(f"n-{i}"))
    assert await queue.client.xlen(queue.keys.status_outbox) == 25
    service.start()
    try:
        await until(lambda: _xlen_is(queue, 20))
    finally:
        await service.aclose(2.0)


async def _xlen_is(queue: JobQueue, n: int) -> bool:
    return int(await queue.client.xlen(queue.keys.status_outbox)) == n


async def test_the_outbox_bound_drops_progress_first_and_never_a_final_state(
    queue_name: str, sqlite_backend: StatusBackend
) -> None:
    client = Redis.from_url(REDIS_URL)
    q = JobQueue(client, queue_name, retention=Retention(outbox_cap=3))
    try:
        await q.enqueue(payload("cap-1"))  # 1 entry
        claim = await q.claim("w", lease_s=30, timeout_s=5)  # 2
        assert claim is not None
        await q.progress("cap-1", claim.token, 10, "a")  # 3: at the cap now
        await q.progress("cap-1", claim.token, 20, "b")  # dropped: progress at the cap
        await q.enqueue_many([payload(f"cap-{i}") for i in range(2, 6)])  # 4..6, then dropped
        assert await client.xlen(q.keys.status_outbox) == 6
        assert await q.complete("cap-1", claim.token, None, message="done")  # final: kept
        assert await client.xlen(q.keys.status_outbox) == 7
        # What was dropped is still in Redis: the reconciler restores it.
        report = await sweep_page(q, sqlite_backend, limit=100)
        assert report.checked == 5 and sorted(report.missing) == [f"cap-{i}" for i in range(1, 6)]
        assert report.cursor == 0  # the whole (small) job hash in one page
        p = projector(q, sqlite_backend, "p")
        assert await p.drain(10.0)
        assert await status_of(sqlite_backend, "cap-1") == "completed"
        assert await status_of(sqlite_backend, "cap-5") == "queued"
    finally:
        await client.aclose()


async def test_reconciliation_fixes_a_missing_row_and_a_stuck_processing_row(
    store: Store, queue: JobQueue
) -> None:
    backend = store.backend()
    try:
        for job_id in ("rc-missing", "rc-stuck", "rc-fine"):
            await queue.enqueue(payload(job_id))
        p = projector(queue, backend, "p")
        await p.drain(10.0)
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None and claim.job.job_id == "rc-missing"
        await p.drain(10.0)  # rc-missing shows processing
        claim2 = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim2 is not None and claim2.job.job_id == "rc-stuck"
        await p.drain(10.0)
        # Changes lost on their way (a failover, an operator's XTRIM): the rows lag.
        stream = queue.keys.status_outbox
        assert await queue.complete("rc-missing", claim.token, None)
        assert await queue.complete("rc-stuck", claim2.token, None)
        await queue.client.xtrim(stream, maxlen=0, approximate=False)
        if store.dsn is not None:
            import psycopg

            with psycopg.connect(store.dsn, autocommit=True) as conn:
                conn.execute("delete from public.ingestion_jobs where job_id = 'rc-missing'")
        else:
            import sqlite3

            path = getattr(backend, "path")  # noqa: B009
            with sqlite3.connect(path) as conn:
                conn.execute("delete from ingestion_jobs where job_id = 'rc-missing'")
        assert await status_of(backend, "rc-stuck") == "processing"
        report = await status_sync(queue, backend)
        assert report.behind == ["rc-stuck"] and report.missing == ["rc-missing"]
        assert report.written == 2 and report.store == store.kind
        assert await status_of(backend, "rc-stuck") == "completed"
        assert await status_of(backend, "rc-missing") == "completed"
        assert await status_of(backend, "rc-fine") == "queued"
        again = await status_sync(queue, backend)
        assert (again.missing, again.behind, again.written, again.checked) == ([], [], 0, 3)
    finally:
        await backend.aclose()


async def test_a_running_job_whose_row_lost_its_claim_is_repaired_while_it_runs(
    store: Store, queue: JobQueue
) -> None:
    """A running job's row trails its record by design (progress rows are throttled),
    but a row that does not say `processing` lost a state change (the outbox bound, an
    XTRIM): the reconciler re-sends it, and a row only behind in progress is left."""
    backend = store.backend()
    try:
        for job_id in ("run-lost", "run-fine"):
            await queue.enqueue(payload(job_id))
        p = projector(queue, backend, "p")
        await p.drain(10.0)
        lost = await queue.claim("w", lease_s=30, timeout_s=5)
        assert lost is not None and lost.job.job_id == "run-lost"
        await queue.client.xtrim(queue.keys.status_outbox, maxlen=0, approximate=False)
        fine = await queue.claim("w", lease_s=30, timeout_s=5)
        assert fine is not None and fine.job.job_id == "run-fine"
        await p.drain(10.0)
        await queue.progress("run-fine", fine.token, 30, "throttled away")
        await queue.progress("run-lost", lost.token, 40, "running")
        await queue.client.xtrim(queue.keys.status_outbox, maxlen=0, approximate=False)
        assert await status_of(backend, "run-lost") == "queued"
        assert await status_of(backend, "run-fine") == "processing"
        report = await sweep_page(queue, backend, limit=100)
        assert report.behind == ["run-lost"], report
        await p.drain(10.0)
        row = await backend.fetch("run-lost")
        assert row is not None and row["status"] == "processing" and row["progress"] == 40
        again = await sweep_page(queue, backend, limit=100)
        assert again.behind == [] and again.missing == []
    finally:
        await backend.aclose()


async def test_a_quiet_job_s_progress_dropped_at_the_outbox_bound_is_re_sent(
    store: Store, queue: JobQueue
) -> None:
    """At the outbox bound a progress row is not recorded, and the holder's throttle takes
    it as written. A running job's row still behind its record once a trailing row would
    have landed is re-sent: a job that went quiet must not show old progress until it ends."""
    backend = store.backend()
    q = JobQueue(queue.client, queue.queue, retention=Retention(outbox_cap=5))
    try:
        await q.enqueue(payload("quiet"))
        claim = await q.claim("w", lease_s=300, timeout_s=5)
        assert claim is not None
        await q.progress("quiet", claim.token, 10, "crawling", row=True)
        p = projector(q, backend, "p")
        await p.drain(10.0)
        for n in range(6):  # the outbox at its bound (a store outage, say)
            await q.enqueue(payload(f"other-{n}"))
        await q.progress("quiet", claim.token, 95, "writing index", row=True)
        changed_ms = (await q.get("quiet")).rev

        async def past_the_trailing_time() -> bool:
            return await q.server_time_ms() > changed_ms + 300

        await until(past_the_trailing_time, 5.0, "Redis's clock past the trailing time")
        # The store is behind (rows from before the change are still to be written): its
        # row may still be on its way, however long ago the change was.
        report = await sweep_page(q, backend, limit=100, trailing_row_s=0.2)
        assert report.behind == [], report
        await p.drain(10.0)
        row = await backend.fetch("quiet")
        assert row is not None and (row["status"], row["progress"]) == ("processing", 10)
        # Just changed: its trailing row may still be on its way.
        report = await sweep_page(q, backend, limit=100, trailing_row_s=60.0)
        assert report.behind == [], report

        async def re_sent() -> bool:
            report = await sweep_page(q, backend, limit=100, trailing_row_s=0.2)
            return report.behind == ["quiet"]

        await until(re_sent, 5.0, "the dropped progress re-sent")
        await p.drain(10.0)
        row = await backend.fetch("quiet")
        assert row is not None
        assert (row["progress"], row["progress_message"]) == (95, "writing index")
    finally:
        await backend.aclose()


async def test_a_retried_job_whose_row_still_shows_its_first_attempt_is_repaired(
    store: Store, queue: JobQueue
) -> None:
    """Attempt 1's failure and attempt 2's claim both lost: the row says `processing` of
    the same run, but of the first attempt."""
    backend = store.backend()
    q = queue
    try:
        first, p = await claimed_and_projected(q, backend, "again", "w", lease_s=30)
        await q.fail("again", first.token, "exit 75", retryable=True, attempt=1)
        second = await q.claim("w", lease_s=30, timeout_s=5)
        assert second is not None and second.job.attempt == 2
        await q.client.xtrim(q.keys.status_outbox, maxlen=0, approximate=False)
        row = await backend.fetch("again")
        assert row is not None and (row["status"], row["attempt"]) == ("processing", 1)
        report = await sweep_page(q, backend, limit=100)
        assert report.behind == ["again"], report
        await p.drain(10.0)
        row = await backend.fetch("again")
        assert row is not None and (row["status"], row["attempt"]) == ("processing", 2)
    finally:
        await backend.aclose()


async def test_a_reclaimed_job_whose_row_still_shows_the_stalled_claim_is_repaired(
    store: Store, queue: JobQueue
) -> None:
    """A stall gives its attempt back, so the next claim runs the same run and attempt:
    with the reap's and the new claim's rows lost, the row says `processing` of the right
    attempt, but names the claim that stalled (its worker, its start)."""
    backend = store.backend()
    q = queue
    try:
        first, p = await claimed_and_projected(q, backend, "stalled", "w-gone", lease_s=0.05)

        async def reaped() -> bool:
            return "stalled" in (await q.reap()).recovered

        await until(reaped, 10.0, "the stalled claim reaped")
        second = await q.claim("w-new", lease_s=30, timeout_s=5)
        assert second is not None and second.job.attempt == first.job.attempt
        await q.client.xtrim(q.keys.status_outbox, maxlen=0, approximate=False)
        row = await backend.fetch("stalled")
        assert row is not None and (row["status"], row["worker_id"]) == ("processing", "w-gone")
        report = await sweep_page(q, backend, limit=100)
        assert report.behind == ["stalled"], report
        await p.drain(10.0)
        row = await backend.fetch("stalled")
        record = await q.get("stalled")
        assert record is not None and record.started_at is not None
        assert row is not None and (row["status"], row["worker_id"]) == ("processing", "w-new")
        assert row["started_at"] == pytest.approx(record.started_at, abs=0.001)
        again = await sweep_page(q, backend, limit=100)
        assert again.behind == [] and again.missing == []
    finally:
        await backend.aclose()


@pytest.mark.parametrize("repair", ["sweep", "status-sync"])
async def test_a_row_ahead_of_a_redis_that_lost_its_last_writes_is_brought_back_to_it(
    store: Store, queue: JobQueue, repair: str
) -> None:
    """Redis came back without its last writes (appendfsync everysec, an asynchronous
    failover) after the rows had them: the row shows a completion Redis no longer has. The
    reconciler finds the row ahead of its record and writes Redis's row over it, if the
    row is still the one it saw; the job's next change then lands as usual, since its
    revision is above every lost one."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("rolled"))
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None
        saved = await queue.client.hget(queue.keys.jobs, "rolled")  # what Redis will keep
        assert await queue.complete("rolled", claim.token, {"n": 1}, message="done")
        p = projector(queue, backend, "p")
        await p.drain(10.0)
        await queue.client.hset(queue.keys.jobs, "rolled", saved)  # the lost writes
        await queue.client.zrem(queue.keys.completed, "rolled")
        await queue.client.zadd(queue.keys.active, {"rolled": time.time() * 1000 + 30_000})
        if repair == "sweep":
            report = await sweep_page(queue, backend, limit=100)
            assert report.ahead == ["rolled"], report
        else:
            synced = await status_sync(queue, backend)
            assert synced.ahead == ["rolled"] and synced.written == 1, synced
        row = await backend.fetch("rolled")
        assert row is not None and row["status"] == "processing" and row["result"] is None
        assert await queue.complete("rolled", claim.token, {"n": 2}, message="done")
        await p.drain(10.0)
        row = await backend.fetch("rolled")
        assert row is not None and row["status"] == "completed" and row["result"] == {"n": 2}
        again = await sweep_page(queue, backend, limit=100)
        assert (again.ahead, again.behind, again.missing) == ([], [], [])
    finally:
        await backend.aclose()


async def test_a_run_redis_forgot_and_ran_again_to_the_same_state_shows_the_new_run(
    store: Store, queue: JobQueue
) -> None:
    """Redis lost a whole attempt (claimed by one daemon, completed with one result) after
    its rows were written, and the job then ran again elsewhere to the same state. The row
    shows what Redis holds now: the second result and worker, not the forgotten ones."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("again"))
        saved = await queue.client.hget(queue.keys.jobs, "again")  # what Redis will keep
        first = await queue.claim("host-old/0/0", lease_s=30, timeout_s=5)
        assert first is not None
        assert await queue.complete("again", first.token, {"run": "forgotten"}, message="done")
        p = projector(queue, backend, "p")
        await p.drain(10.0)
        await queue.client.hset(queue.keys.jobs, "again", saved)  # the lost writes
        await queue.client.zrem(queue.keys.completed, "again")
        await queue.client.zadd(queue.keys.waiting, {"again": 0})
        second = await queue.claim("host-new/0/1", lease_s=30, timeout_s=5)
        assert second is not None and second.job.job_id == "again"
        assert await queue.complete("again", second.token, {"run": "real"}, message="done")
        await p.drain(10.0)
        await sweep_page(queue, backend, limit=100)
        row = await backend.fetch("again")
        assert row is not None and row["status"] == "completed"
        assert (row["result"], row["worker_id"]) == ({"run": "real"}, "host-new/0/1")
    finally:
        await backend.aclose()


async def test_a_row_redis_reached_again_with_other_content_is_brought_back_to_it(
    store: Store, queue: JobQueue
) -> None:
    """After lost writes, Redis's clock stepped back far enough that the record reached
    the row's very revision again with another state: neither key is newer, so only the
    status tells them apart."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("same-rev"))
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None
        for pct in (20, 40, 60):
            await queue.progress("same-rev", claim.token, pct, f"at {pct}")
        p = projector(queue, backend, "p")
        await p.drain(10.0)
        seen = await backend.fetch_versions(["same-rev"])
        assert await queue.complete("same-rev", claim.token, {"n": 2}, message="done")
        record = json.loads(await queue.client.hget(queue.keys.jobs, "same-rev"))
        record["rev"] = seen["same-rev"][1]  # where the stepped-back clock left it
        await queue.client.hset(queue.keys.jobs, "same-rev", json.dumps(record))
        report = await sweep_page(queue, backend, limit=100)
        assert report.ahead == ["same-rev"], report
        row = await backend.fetch("same-rev")
        assert row is not None and row["status"] == "completed" and row["result"] == {"n": 2}
    finally:
        await backend.aclose()


async def test_a_row_redis_reached_again_by_another_claim_in_the_same_state_is_replaced(
    store: Store, queue: JobQueue
) -> None:
    """As above, but the run Redis remembers ended in the same state as the forgotten
    one: only the claim (its start) tells the rows apart, and the row of the forgotten
    run (its worker, its result) must not stay."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("same-state"))
        saved = await queue.client.hget(queue.keys.jobs, "same-state")
        first = await queue.claim("host-old", lease_s=30, timeout_s=5)
        assert first is not None
        assert await queue.complete("same-state", first.token, {"run": "forgotten"})
        p = projector(queue, backend, "p")
        await p.drain(10.0)
        seen = (await backend.fetch_versions(["same-state"]))["same-state"]
        # Redis lost the run's writes; the job ran again, on a clock stepped back.
        await queue.client.hset(queue.keys.jobs, "same-state", saved)
        await queue.client.zrem(queue.keys.completed, "same-state")
        await queue.client.zadd(queue.keys.waiting, {"same-state": 0})
        await queue.client.xtrim(queue.keys.status_outbox, maxlen=0, approximate=False)

        async def claimed_later() -> Any:
            # A claim in another millisecond than the forgotten one: the two starts differ.
            return await queue.server_time_ms() > (seen.started_at or 0) * 1000 + 1

        await until(claimed_later, 5.0, "Redis's clock past the first claim")
        second = await queue.claim("host-new", lease_s=30, timeout_s=5)
        assert second is not None
        assert await queue.complete("same-state", second.token, {"run": "real"})
        record = json.loads(await queue.client.hget(queue.keys.jobs, "same-state"))
        record["rev"] = seen.rev
        await queue.client.hset(queue.keys.jobs, "same-state", json.dumps(record))
        await queue.client.xtrim(queue.keys.status_outbox, maxlen=0, approximate=False)
        report = await sweep_page(queue, backend, limit=100)
        assert report.ahead == ["same-state"], report
        row = await backend.fetch("same-state")
        assert row is not None and row["status"] == "completed"
        assert (row["result"], row["worker_id"]) == ({"run": "real"}, "host-new")
        again = await sweep_page(queue, backend, limit=100)
        assert again.ahead == [] and again.behind == []
    finally:
        await backend.aclose()


async def test_a_row_of_a_later_run_in_another_queue_is_not_taken_for_ahead(
    store: Store, queue: JobQueue, queue_name: str
) -> None:
    """Queues may share one table, and a job id can run in one after the other. The row of
    the later run is not this queue's lost writes: it is left alone."""
    backend = store.backend()
    other = JobQueue(queue.client, f"{queue_name}-b")
    try:
        await queue.enqueue(payload("shared"))
        await p_drain(queue, backend)
        await other.enqueue(payload("shared"))
        await p_drain(other, backend)
        report = await sweep_page(queue, backend, limit=100)
        assert report.ahead == [] and report.behind == [], report
        row = await backend.fetch("shared")
        assert row is not None and row["seq_run"] == (await other.get("shared")).enqueued_at
    finally:
        keys = [k async for k in queue.client.scan_iter(match=other.keys.pattern)]
        if keys:
            await queue.client.delete(*keys)
        await backend.aclose()


async def p_drain(q: JobQueue, backend: StatusBackend) -> None:
    assert await projector(q, backend, f"p-{q.queue}").drain(10.0)


async def test_a_stopping_projector_leaves_what_it_cannot_write_for_the_others(
    store: Store, queue: JobQueue
) -> None:
    backend = store.backend()
    try:
        service = StatusService(queue, backend, consumer="leaving", reconcile_interval_s=3600)
        service.start()
        await queue.enqueue(payload("s-0"))
        await until(lambda: _is(backend, "s-0", "queued"))
        store.cut()
        for i in range(1, 4):
            await queue.enqueue(payload(f"s-{i}"))
        started = time.monotonic()
        await service.aclose(1.0)
        assert time.monotonic() - started < 10
    finally:
        store.restore()
    other = store.backend()
    try:
        heir = projector(queue, other, "heir", claim_idle_s=0.1)
        await until(lambda: _took_over(heir))
        assert await heir.drain(10.0)
        for i in range(4):
            assert await status_of(other, f"s-{i}") == "queued"
    finally:
        await other.aclose()
        await backend.aclose()


async def test_an_outbox_no_group_reads_keeps_its_last_minute(queue: JobQueue) -> None:
    """A daemon that writes no status trims an outbox no group reads. Right after Redis
    restarted empty the projecting daemons' group is missing for a few seconds, so the
    last minute's rows wait for it; older ones go."""
    stream = queue.keys.status_outbox
    now_ms = await queue.server_time_ms()
    await queue.client.xadd(stream, {"x": "old"}, id=f"{now_ms - 120_000}-0")
    await queue.client.xadd(stream, {"x": "recent"}, id=f"{now_ms - 5_000}-0")
    state = dataclasses.replace(await outbox_state(queue.client, stream), read_at_ms=now_ms)
    assert not state.has_group
    assert await trim_outbox(queue.client, stream, state) == 1
    assert [fields for _id, fields in await queue.client.xrange(stream)] == [{b"x": b"recent"}]
    unknown_time = dataclasses.replace(state, read_at_ms=None)
    assert await trim_outbox(queue.client, stream, unknown_time) == 0


async def test_a_store_out_of_reach_cuts_a_reconcile_sweep_short_in_one_line(
    store: Store, queue: JobQueue, caplog: pytest.LogCaptureFixture
) -> None:
    """A restart of the store, a pooler failover: the sweep tries again at its next turn
    and says so in one warning, without a traceback at ERROR that log alerts would take for
    a fault."""
    if store.kind == "sqlite":
        pytest.skip("SQLite's lock holder makes writes wait, not fail, within a sweep")
    backend = store.backend()
    await queue.enqueue(payload("sweep-1"))
    store.cut()
    service = StatusService(queue, backend, consumer="sweeper", reconcile_interval_s=0.2)
    caplog.set_level("WARNING", logger="supervisor.status.service")
    service.start()
    try:
        await until(
            lambda: _true(any("reconcile sweep" in r.getMessage() for r in caplog.records)),
            20.0,
            "a reconcile sweep cut short",
        )
    finally:
        await service.aclose(2.0)
        store.restore()
        await backend.aclose()
    swept = [r for r in caplog.records if "reconcile sweep" in r.getMessage()]
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in swept), swept


async def test_rows_still_waiting_in_the_outbox_are_not_re_sent(
    queue: JobQueue, sqlite_backend: StatusBackend
) -> None:
    """A slow store is not a dropped row: jobs whose changes still wait in the outbox are
    not re-sent by the reconciler (each re-send is one more row for the same slow store);
    once their entries are gone unprojected (trimmed), their rows are."""
    await projector(queue, sqlite_backend, "p-waiting").ensure_group()
    ids = [f"waiting-{i}" for i in range(3)]
    for job_id in ids:
        await queue.enqueue(payload(job_id))
    report = await sweep_page(queue, sqlite_backend, limit=100)
    assert report.missing == [], "their queued rows are still in the outbox"
    assert await queue.client.xlen(queue.keys.status_outbox) == 3
    await queue.client.xtrim(queue.keys.status_outbox, maxlen=0)
    report = await sweep_page(queue, sqlite_backend, limit=100)
    assert sorted(report.missing) == ids
    assert await queue.client.xlen(queue.keys.status_outbox) == 3  # re-sent
