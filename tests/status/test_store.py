"""The same cases against every backend: a job's life, monotonic writes, batches."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from supervisor.status import StatusStoreError, StatusUpdate, merge, write_queued
from tests.status.conftest import Store

T0 = 1_700_000_000.0  # the job's enqueue time (its run), as the queue records it
TENANT = "tenant-a"


def start(job: str, attempt: int, at: float, worker: str = "w1") -> StatusUpdate:
    return StatusUpdate(
        job_id=job,
        tenant_id=TENANT,
        status="processing",
        attempt=attempt,
        max_attempts=3,
        seq_run=T0,
        seq_at=at,
        progress=0.0,
        worker_id=worker,
        queued_at=T0,
        started_at=at,
    )


def tick(job: str, attempt: int, at: float, pct: float, msg: str | None = None) -> StatusUpdate:
    return StatusUpdate(
        job_id=job,
        tenant_id=TENANT,
        status="processing",
        attempt=attempt,
        seq_run=T0,
        seq_at=at,
        progress=pct,
        progress_message=msg,
    )


def outcome(
    job: str,
    attempt: int,
    started: float,
    at: float,
    status: str,
    worker: str = "w1",
    **kw: Any,
) -> StatusUpdate:
    return StatusUpdate(
        job_id=job,
        tenant_id=TENANT,
        status=status,
        attempt=attempt,
        max_attempts=3,
        seq_run=T0,
        seq_at=at,
        queued_at=T0,
        started_at=started,
        finished_at=at,
        duration_ms=round((at - started) * 1000),
        worker_id=worker,
        **kw,
    )


def life(job: str) -> list[StatusUpdate]:
    """Attempt 1 fails and is retried; attempt 2 completes. As the daemon's sink does, an
    outcome carries everything known about its attempt, so it stands alone in any order."""
    return [
        start(job, 1, T0 + 1),
        tick(job, 1, T0 + 2, 30, "reading"),
        outcome(job, 1, T0 + 1, T0 + 3, "queued", error="exit 75", peak_rss_bytes=1000),
        start(job, 2, T0 + 10, worker="w2"),
        tick(job, 2, T0 + 11, 50, "embedding"),
        outcome(
            job,
            2,
            T0 + 10,
            T0 + 12.5,
            "completed",
            "w2",
            progress=100.0,
            result={"chunks": 7},
            peak_rss_bytes=2048,
            progress_message="embedding",
        ),
    ]


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


def final_of_life(row: dict[str, Any] | None) -> None:
    assert row is not None
    assert row["status"] == "completed"
    assert row["attempt"] == 2
    assert row["progress"] == 100.0
    assert row["progress_message"] == "embedding"
    assert row["error"] is None  # attempt 1's error does not survive a completion
    assert row["result"] == {"chunks": 7}
    assert row["worker_id"] == "w2"
    assert row["max_attempts"] == 3
    assert row["queued_at"] == pytest.approx(T0)
    assert row["started_at"] == pytest.approx(T0 + 10)
    assert row["finished_at"] == pytest.approx(T0 + 12.5)
    assert row["duration_ms"] == 2500
    assert row["peak_rss_bytes"] == 2048


async def test_full_life_of_a_job(store: Store) -> None:
    backend = store.backend()
    job = "job-life"
    try:
        await write_queued(
            backend,
            {"job_id": job, "tenant_id": TENANT, "trial_token": "s3cret"},
            max_attempts=3,
            queued_at=T0 - 0.5,
        )
        row = await backend.fetch(job)
        assert row is not None
        assert (row["status"], row["attempt"], row["progress"]) == ("queued", 0, 0.0)
        assert row["queued_at"] == pytest.approx(T0 - 0.5)
        assert row["updated_at"] is not None

        steps = life(job)
        await backend.apply(steps[:2])
        row = await backend.fetch(job)
        assert row is not None
        assert (row["status"], row["attempt"], row["progress"]) == ("processing", 1, 30.0)
        assert row["progress_message"] == "reading"
        assert row["started_at"] == pytest.approx(T0 + 1)
        assert row["queued_at"] == pytest.approx(T0)  # the queue's time replaces the producer's

        await backend.apply([steps[2]])
        row = await backend.fetch(job)
        assert row is not None
        assert (row["status"], row["attempt"], row["error"]) == ("queued", 1, "exit 75")
        assert row["finished_at"] == pytest.approx(T0 + 3)

        await backend.apply([steps[3]])
        row = await backend.fetch(job)
        assert row is not None
        assert (row["status"], row["attempt"], row["progress"]) == ("processing", 2, 0.0)
        assert row["finished_at"] is None and row["peak_rss_bytes"] is None
        assert row["progress_message"] is None
        assert row["error"] == "exit 75"  # the last attempt's error stays visible while retrying

        await backend.apply(steps[4:])
        final_of_life(await backend.fetch(job))
    finally:
        await backend.aclose()


async def test_every_order_of_arrival_ends_in_the_same_row(store: Store) -> None:
    rng = random.Random(5)
    steps = life("x")
    orders = [list(reversed(steps)), steps[3:] + steps[:3]] + [
        rng.sample(steps, len(steps)) for _ in range(3)
    ]
    for i, order in enumerate(orders):
        job = f"job-order-{i}"
        await apply_each(store, [StatusUpdate(**{**u.to_json(), "job_id": job}) for u in order])
        final_of_life(await fetch(store, job))


async def test_stale_changes_are_ignored(store: Store) -> None:
    job = "job-stale"
    backend = store.backend()
    try:
        await backend.apply(life(job))
        late = [
            tick(job, 2, T0 + 11.5, 60),  # a late progress after the final
            start(job, 1, T0 + 20),  # an older attempt, even with a later clock
            outcome(job, 1, T0 + 1, T0 + 30, "failed", error="old attempt"),
            life(job)[-1],  # a replay of the final itself
        ]
        await backend.apply(late)
        await write_queued(
            backend, {"job_id": job, "tenant_id": TENANT}, max_attempts=3, queued_at=T0 + 99
        )
        final_of_life(await backend.fetch(job))
    finally:
        await backend.aclose()


async def test_a_new_run_supersedes_the_final_state(store: Store) -> None:
    job = "job-rerun"
    backend = store.backend()
    try:
        await backend.apply(life(job))
        run2 = T0 + 3600
        rerun = StatusUpdate(
            job_id=job,
            tenant_id=TENANT,
            status="processing",
            attempt=1,
            seq_run=run2,
            seq_at=run2 + 1,
            progress=0.0,
            worker_id="w3",
            queued_at=run2,
            started_at=run2 + 1,
        )
        await backend.apply([rerun])
        row = await backend.fetch(job)
        assert row is not None
        assert (row["status"], row["attempt"], row["worker_id"]) == ("processing", 1, "w3")
        assert row["result"] is None and row["error"] is None and row["finished_at"] is None
        assert row["queued_at"] == pytest.approx(run2)
    finally:
        await backend.aclose()


async def test_duplicates_of_one_job_in_a_batch(store: Store) -> None:
    job = "job-dup"
    backend = store.backend()
    try:
        changed = await backend.apply(list(reversed(life(job))) + life(job))
        final_of_life(await backend.fetch(job))
        if store.kind != "none":
            assert changed >= 1
    finally:
        await backend.aclose()


async def test_concurrent_writers_converge_on_the_newest_state(store: Store) -> None:
    """Two daemons' backends racing on the same jobs, each sending its half out of order."""
    jobs = [f"job-race-{i}" for i in range(20)]
    rng = random.Random(9)

    async def daemon(parity: int) -> None:
        backend = store.backend()
        try:
            for _round in range(3):
                batch = [u for j in jobs for k, u in enumerate(life(j)) if k % 2 == parity]
                rng.shuffle(batch)
                for i in range(0, len(batch), 15):
                    await backend.apply(batch[i : i + 15])
        finally:
            await backend.aclose()

    await asyncio.gather(daemon(0), daemon(1))
    backend = store.backend()
    try:
        for j in jobs:
            final_of_life(await backend.fetch(j))
    finally:
        await backend.aclose()


async def test_invalid_changes_are_rejected_permanently(store: Store) -> None:
    backend = store.backend()
    try:
        with pytest.raises(StatusStoreError) as err:
            await backend.apply([start("bad id with spaces", 1, T0 + 1)])
        assert err.value.permanent
        assert await backend.fetch("bad id with spaces") is None
    finally:
        await backend.aclose()


def test_merge_equals_applying_both() -> None:
    steps = life("m")
    merged = steps[0]
    for u in steps[1:]:
        merged = merge(merged, u)
    assert merged == merge(merged, steps[1])  # stale: unchanged
    assert merged.status == "completed" and merged.progress_message == "embedding"
    assert merged.error is None and merged.worker_id == "w2"
    assert merge(steps[0], steps[1]).started_at == T0 + 1  # progress keeps the start
