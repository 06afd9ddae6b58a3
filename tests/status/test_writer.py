"""The background writer against each real backend: coalescing, throttling, the store down
for a while, bounded memory, shutdown that says what it could not write."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from supervisor.events import JobFinished, JobProgress, JobStarted
from supervisor.status import StatusSink, StatusUpdate, StatusWriter
from tests.status.conftest import Store
from tests.status.test_store import T0, TENANT, outcome, start, tick


async def until(cond: Callable[[], Awaitable[bool]], deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while not await cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.05)


async def row_of(store: Store, job: str) -> dict[str, Any] | None:
    backend = store.backend()
    try:
        return await backend.fetch(job)
    finally:
        await backend.aclose()


def fast_writer(store: Store, **kw: Any) -> StatusWriter:
    kw.setdefault("retry_initial_s", 0.05)
    kw.setdefault("retry_max_s", 0.3)
    return StatusWriter(store.backend(), **kw)


async def test_progress_is_coalesced_and_throttled(store: Store) -> None:
    batches: list[int] = []
    writer = fast_writer(
        store, progress_interval_s=30.0, on_batch=lambda n, s, ok: batches.append(n)
    )
    await writer.start()
    job = "job-throttle"
    writer.submit(start(job, 1, T0 + 1))
    for i in range(200):
        writer.submit(tick(job, 1, T0 + 2 + i / 1000, i / 2, f"step {i}"))
    await until(lambda: _status_is(store, job, "processing"))
    # The start (with whatever ticks coalesced into it) went out; the rest wait for the
    # 30 s throttle, merged into one pending change, until the final makes it due at once.
    assert writer.backlog <= 1
    writer.submit(outcome(job, 1, T0 + 1, T0 + 3, "completed", progress=100.0))
    await until(lambda: _status_is(store, job, "completed"))
    assert await writer.aclose(5.0) == 0
    assert sum(batches) <= 3
    assert writer.stats.written == sum(batches)
    row = await row_of(store, job)
    assert row is not None and row["progress"] == 100.0


async def _status_is(store: Store, job: str, status: str) -> bool:
    row = await row_of(store, job)
    return row is not None and row["status"] == status


async def test_store_down_submits_stay_instant_finals_land_memory_bounded(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    writer = fast_writer(store, max_pending_jobs=50, batch_size=20)
    await writer.start()
    store.cut()
    try:
        finals = [f"job-down-{i}" for i in range(30)]
        for job in finals:
            writer.submit(start(job, 1, T0 + 1))
        # A flood of progress for many other jobs while the store is away.
        for i in range(2000):
            writer.submit(tick(f"job-noise-{i}", 1, T0 + 2, 10))
        for job in finals:
            writer.submit(outcome(job, 1, T0 + 1, T0 + 5, "failed", error="boom"))
        # submit() is synchronous: it cannot wait on the store. Memory: at most the cap
        # plus finals (never dropped) plus one batch in flight.
        assert writer.backlog <= 50 + len(finals) + 20
        assert writer.stats.dropped >= 2000 - 50
        await until(lambda: _failed_once(writer))
    finally:
        store.restore()
    for job in finals:
        await until(lambda job=job: _status_is(store, job, "failed"))
    assert await writer.aclose(10.0) == 0
    assert writer.stats.failures >= 1
    row = await row_of(store, finals[0])
    assert row is not None and row["error"] == "boom"


async def _failed_once(writer: StatusWriter) -> bool:
    return writer.stats.failures >= 1


async def test_shutdown_with_store_down_reports_unwritten(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    writer = fast_writer(store)
    await writer.start()
    store.cut()
    try:
        writer.submit(outcome("job-lost-1", 1, T0, T0 + 1, "completed"))
        writer.submit(tick("job-lost-2", 1, T0 + 1, 40))
        with caplog.at_level(logging.ERROR, logger="supervisor.status.writer"):
            unwritten = await writer.aclose(0.5)
    finally:
        store.restore()
    assert unwritten == 2
    text = caplog.text
    assert "job-lost-1" in text and "job-lost-2" in text
    writer.submit(tick("job-after-close", 1, T0, 1))  # logged and ignored, never raises


async def test_a_rejected_change_does_not_hold_back_the_batch(store: Store) -> None:
    writer = fast_writer(store)
    good = [f"job-good-{i}" for i in range(3)]
    for job in good[:2]:
        writer.submit(start(job, 1, T0 + 1))
    writer.submit(start("bad id", 1, T0 + 1))
    writer.submit(start(good[2], 1, T0 + 1))
    await writer.start()
    for job in good:
        await until(lambda job=job: _status_is(store, job, "processing"))
    assert await writer.aclose(5.0) == 0
    assert writer.stats.rejected == 1


async def test_two_daemons_writers_converge(store: Store) -> None:
    """Daemon A ran attempt 1 (and learns late); daemon B ran attempt 2 and completed."""
    a, b = fast_writer(store), fast_writer(store)
    await a.start()
    await b.start()
    jobs = [f"job-two-{i}" for i in range(25)]
    for job in jobs:
        b.submit(start(job, 2, T0 + 10, worker="w2"))
        a.submit(start(job, 1, T0 + 1))
        b.submit(
            outcome(job, 2, T0 + 10, T0 + 12, "completed", "w2", progress=100.0, result={"ok": 1})
        )
        a.submit(tick(job, 1, T0 + 2, 50))
        a.submit(outcome(job, 1, T0 + 1, T0 + 3, "queued", error="exit 75"))
    assert await a.aclose(10.0) == 0
    assert await b.aclose(10.0) == 0
    for job in jobs:
        row = await row_of(store, job)
        assert row is not None
        assert (row["status"], row["attempt"], row["worker_id"]) == ("completed", 2, "w2")
        assert row["result"] == {"ok": 1} and row["error"] is None


async def test_sink_turns_job_events_into_rows(store: Store) -> None:
    writer = fast_writer(store, progress_interval_s=0.0)
    sink = StatusSink(writer)
    await sink.start()
    job = "job-sink"
    common: dict[str, Any] = {"queue": "q", "job_id": job, "tenant_id": TENANT}
    sink.job_started(
        JobStarted(
            **common,
            attempt=1,
            max_attempts=3,
            worker_id="host:1",
            payload={},
            enqueued_at=T0,
            started_at=T0 + 1,
        )
    )
    sink.job_progress(JobProgress(**common, attempt=1, progress=40, message="chunking", at=T0 + 2))
    await until(lambda: _progress_is(store, job, 40.0))
    sink.job_finished(
        JobFinished(
            **common,
            attempt=1,
            max_attempts=3,
            worker_id="host:1",
            outcome="retried",
            table_status="queued",
            final=False,
            enqueued_at=T0,
            started_at=T0 + 1,
            finished_at=T0 + 4,
            error="exit code 75",
            peak_rss_bytes=12345,
            progress=40,
            progress_message="chunking",
        )
    )
    sink.job_started(
        JobStarted(
            **common,
            attempt=2,
            max_attempts=3,
            worker_id="host:2",
            payload={},
            enqueued_at=T0,
            started_at=T0 + 9,
        )
    )
    sink.job_finished(
        JobFinished(
            **common,
            attempt=2,
            max_attempts=3,
            worker_id="host:2",
            outcome="completed",
            table_status="completed",
            final=True,
            enqueued_at=T0,
            started_at=T0 + 9,
            finished_at=T0 + 10.25,
            result={"chunks": 3},
            peak_rss_bytes=999,
            progress=90,
            progress_message="storing",
        )
    )
    sink.job_progress(JobProgress(**common, attempt=2, progress=95, message="late", at=T0 + 10))
    await sink.aclose(10.0)
    row = await row_of(store, job)
    assert row is not None
    assert row["status"] == "completed" and row["attempt"] == 2 and row["progress"] == 100.0
    assert row["worker_id"] == "host:2" and row["result"] == {"chunks": 3}
    assert row["duration_ms"] == 1250 and row["peak_rss_bytes"] == 999
    assert row["started_at"] == pytest.approx(T0 + 9)
    assert row["finished_at"] == pytest.approx(T0 + 10.25)
    assert row["error"] is None and row["progress_message"] == "storing"


async def _progress_is(store: Store, job: str, pct: float) -> bool:
    row = await row_of(store, job)
    return row is not None and row["progress"] == pct


def test_progress_only_changes_are_recognised() -> None:
    assert tick("j", 1, 1.0, 5).progress_only
    assert not start("j", 1, 1.0).progress_only
    assert not StatusUpdate(job_id="j", tenant_id="t", status="queued").progress_only
