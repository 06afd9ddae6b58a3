"""The same cases against every backend, with rows the real Lua scripts made: a job's
life, any order of arrival, replays, a new run, tenants, rejected rows, the versions the
reconciler reads."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

import pytest

from supervisor.status import StatusStoreError, StatusUpdate
from supervisor.status.update import newest_per_job
from tests.status.conftest import Store
from tests.status.snapshots import TENANT, job_life, lives, make_queue, outbox_entries, payload


async def apply_each(store: Store, updates: list[StatusUpdate]) -> None:
    backend = store.backend()
    try:
        for u in updates:
            await backend.apply([u])
    finally:
        await backend.aclose()


async def fetch(store: Store, job: str) -> dict[str, Any] | None:
    backend = store.backend()
    try:
        return await backend.fetch(job)
    finally:
        await backend.aclose()


def final_of_life(row: dict[str, Any] | None, rows: list[StatusUpdate]) -> None:
    assert row is not None
    last = rows[-1]
    assert row["status"] == "completed"
    assert row["attempt"] == 2
    assert row["progress"] == 100.0
    assert row["progress_message"] == "done"  # the child's last message, not a stale one
    assert row["error"] is None  # attempt 1's error does not survive a completion
    assert row["result"] == {"chunks": 7}
    assert row["worker_id"] == "w2"
    assert row["max_attempts"] == 3
    assert row["queued_at"] == pytest.approx(last.seq_run)
    assert row["started_at"] == pytest.approx(last.started_at)
    assert row["finished_at"] == pytest.approx(last.finished_at)
    assert row["duration_ms"] == last.duration_ms and last.duration_ms is not None
    assert row["peak_rss_bytes"] == 2048
    assert (row["seq_run"], row["rev"]) == pytest.approx(last.key)


async def test_every_step_of_a_life_shows_what_redis_shows(store: Store, queue_name: str) -> None:
    rows = (await lives(queue_name, ["job-life"]))["job-life"]
    statuses = [r.status for r in rows]
    assert statuses == [
        "queued",  # enqueued
        "processing",  # attempt 1
        "processing",  # 30 % reading
        "queued",  # failed, retry delayed
        "queued",  # retry due: waiting again
        "processing",  # attempt 2
        "processing",  # 50 %
        "processing",  # 90 %
        "completed",
    ]
    backend = store.backend()
    try:
        seen = []
        for r in rows:
            await backend.apply([r])
            row = await backend.fetch("job-life")
            assert row is not None
            seen.append((row["status"], row["attempt"], row["progress"], row["error"]))
            # When the attempt it shows began, queued again after it or not.
            assert (row["started_at"] is None) is (r is rows[0]), (r, row)
        assert ("processing", 1, 30.0, None) in seen
        assert ("queued", 1, 30.0, "exit 75") in seen  # the retry shows the last error
        assert ("processing", 2, 0.0, None) in seen  # a new attempt clears the outcome
        final_of_life(await backend.fetch("job-life"), rows)
    finally:
        await backend.aclose()


async def test_every_order_of_arrival_ends_in_the_same_row(store: Store, queue_name: str) -> None:
    rows = (await lives(queue_name, ["x"]))["x"]
    rng = random.Random(5)
    orders = [list(reversed(rows)), rows[3:] + rows[:3]] + [
        rng.sample(rows, len(rows)) for _ in range(3)
    ]
    for i, order in enumerate(orders):
        job = f"job-order-{i}"
        await apply_each(store, [replace(u, job_id=job) for u in order])
        final_of_life(await fetch(store, job), rows)


async def test_replays_and_duplicates_in_one_batch(store: Store, queue_name: str) -> None:
    rows = (await lives(queue_name, ["dup"]))["dup"]
    backend = store.backend()
    try:
        assert await backend.apply(list(reversed(rows)) + rows) >= 1
        final_of_life(await backend.fetch("dup"), rows)
        assert await backend.apply(rows) == 0  # nothing newer: nothing changes
        final_of_life(await backend.fetch("dup"), rows)
    finally:
        await backend.aclose()


async def test_a_manual_retry_is_a_new_run_that_replaces_the_final_row(
    store: Store, queue_name: str
) -> None:
    queue = make_queue(queue_name)
    try:
        await job_life(queue, "rerun")
        # A completed job cannot be retried; fail a second job and retry it instead.
        await queue.enqueue(payload("rerun2", max_attempts=1))
        c = await queue.claim("w9", lease_s=30, timeout_s=10)
        assert c is not None
        await queue.fail("rerun2", c.token, "bad input", retryable=False, attempt=1)
        assert await queue.retry("rerun2") == "requeued"
        rows = [e.row for e in await outbox_entries(queue) if e.row.job_id == "rerun2"]
    finally:
        await queue.client.aclose()
    failed = next(r for r in rows if r.status == "failed")
    requeued = rows[-1]
    assert requeued.seq_run > failed.seq_run and requeued.status == "queued"
    backend = store.backend()
    try:
        await backend.apply([failed])
        await backend.apply([requeued])
        row = await backend.fetch("rerun2")
        assert row is not None
        assert (row["status"], row["attempt"], row["error"]) == ("queued", 0, None)
        assert row["finished_at"] is None
        await backend.apply([failed])  # the old run's final state arrives late: ignored
        row = await backend.fetch("rerun2")
        assert row is not None and row["status"] == "queued"
    finally:
        await backend.aclose()


async def test_a_row_never_changes_tenant(store: Store, queue_name: str) -> None:
    rows = (await lives(queue_name, ["owned"]))["owned"]
    backend = store.backend()
    try:
        await backend.apply([rows[-1]])
        intruder = replace(rows[-1], tenant_id="tenant-b", seq_run=rows[-1].seq_run + 60, rev=1)
        await backend.apply([intruder])
        row = await backend.fetch("owned")
        assert row is not None and row["tenant_id"] == TENANT
        final_of_life(row, rows)
    finally:
        await backend.aclose()


async def test_concurrent_projectors_converge_on_the_newest_row(
    store: Store, queue_name: str
) -> None:
    jobs = [f"job-race-{i}" for i in range(10)]
    all_rows = await lives(queue_name, jobs)
    rng = random.Random(9)

    async def projector(parity: int) -> None:
        backend = store.backend()
        try:
            batch = [u for j in jobs for k, u in enumerate(all_rows[j]) if k % 2 == parity]
            batch += [all_rows[j][-1] for j in jobs]
            rng.shuffle(batch)
            for i in range(0, len(batch), 15):
                await backend.apply(newest_per_job(batch[i : i + 15]))
        finally:
            await backend.aclose()

    await asyncio.gather(projector(0), projector(1))
    backend = store.backend()
    try:
        for j in jobs:
            final_of_life(await backend.fetch(j), all_rows[j])
        versions = await backend.fetch_versions([*jobs, "no-such-job"])
        assert set(versions) == set(jobs)
        for j in jobs:
            assert versions[j][:2] == pytest.approx(all_rows[j][-1].key)
            assert versions[j][2] == "tenant-a"
            assert versions[j][3] == "completed"
    finally:
        await backend.aclose()


async def test_invalid_rows_are_rejected_permanently(store: Store) -> None:
    bad = StatusUpdate(job_id="bad id with spaces", tenant_id=TENANT, status="queued", rev=1)
    backend = store.backend()
    try:
        with pytest.raises(StatusStoreError) as err:
            await backend.apply([bad])
        assert err.value.permanent
        assert await backend.fetch("bad id with spaces") is None
    finally:
        await backend.aclose()


async def test_an_unreachable_store_is_a_transient_error(store: Store) -> None:
    backend = store.backend()
    store.cut()
    try:
        with pytest.raises(StatusStoreError) as err:
            await backend.apply([StatusUpdate(job_id="j", tenant_id=TENANT, status="queued")])
        assert not err.value.permanent
    finally:
        store.restore()
        await backend.aclose()
