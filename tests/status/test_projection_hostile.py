"""What a hostile child, a poisoned stream, a vanished group or a reused job id must not do
to the status table: every row still ends final, and nothing unread is trimmed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from supervisor.queue.jobqueue import JobQueue
from supervisor.status import StatusBackend, StatusUpdate
from supervisor.status.outbox import GROUP, row_from_fields
from supervisor.status.projector import StatusProjector
from supervisor.status.service import StatusService
from supervisor.status.sync import status_sync
from supervisor.status.trim import outbox_state, trim_outbox
from tests.status.conftest import Store
from tests.status.snapshots import payload
from tests.waiting import until

INGESTCTL = str(Path(sys.executable).parent / "ingestctl")


async def row(backend: StatusBackend, job_id: str) -> dict[str, Any] | None:
    return await backend.fetch(job_id)


async def test_nul_characters_from_a_child_never_keep_a_row_from_its_final_state(
    store: Store, queue: JobQueue
) -> None:
    backend = store.backend()
    try:
        await queue.enqueue(payload("nul"))
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None
        await queue.progress("nul", claim.token, 50, "half\x00way")
        result = {"pages\x00": "a\x00b", "list": ["\x00"]}
        assert await queue.complete("nul", claim.token, result, message="do\x00ne")
        p = StatusProjector(queue.client, queue.keys, backend, consumer="p")
        assert await p.drain(10.0)
        got = await row(backend, "nul")
        assert got is not None and got["status"] == "completed"
        assert got["progress_message"] == "done"
        assert got["result"] == {"pages": "ab", "list": [""]}
        assert p.stats.rejected == 0
    finally:
        await backend.aclose()


async def test_a_result_the_store_cannot_encode_never_holds_back_the_rows_behind_it(
    store: Store, queue: JobQueue
) -> None:
    """A record whose result holds what JSON or UTF-8 cannot (NaN, a lone surrogate: the
    runner refuses or replaces both, but a record from elsewhere may hold them) still ends
    its row final, and the next job's row is written after it."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("odd"))
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None
        odd = {"score": float("nan"), "title": "\ud83d broken", "top": float("inf")}
        assert await queue.complete("odd", claim.token, odd, message="done")
        await queue.enqueue(payload("after", tenant="tenant-b"))
        p = StatusProjector(queue.client, queue.keys, backend, consumer="p", retry_max_s=0.2)
        assert await p.drain(15.0)
        got = await row(backend, "odd")
        assert got is not None and got["status"] == "completed"
        after = await row(backend, "after")
        assert after is not None and after["status"] == "queued"
    finally:
        await backend.aclose()


async def test_a_result_nested_too_deep_for_the_store_still_ends_its_row_final(
    store: Store, queue: JobQueue
) -> None:
    """A record whose result is nested deeper than anything walking it should meet (the
    runner refuses such a RESULT, but a record from elsewhere may hold one): the projector
    and status-sync both end the row final, without the result."""
    backend = store.backend()
    try:
        deep: Any = 1
        for _ in range(600):
            deep = [deep]
        await queue.enqueue(payload("deep"))
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None
        assert await queue.complete("deep", claim.token, deep)
        await queue.enqueue(payload("after-deep", tenant="tenant-b"))
        p = StatusProjector(queue.client, queue.keys, backend, consumer="p")
        assert await p.drain(10.0)
        got = await row(backend, "deep")
        assert got is not None and got["status"] == "completed"
        assert p.stats.bad_entries == 0
        report = await status_sync(queue, backend)  # a repair pass reads the record too
        assert report is not None
        got = await row(backend, "deep")
        assert got is not None and got["status"] == "completed"
    finally:
        await backend.aclose()


async def test_a_record_that_makes_no_row_never_stops_a_repair_pass(
    store: Store, queue: JobQueue
) -> None:
    """status-sync reads every record that lags its row: one no row can be made of (here a
    state no version writes) is skipped, the others are still written."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("fine"))
        raw = await queue.client.hget(queue.keys.jobs, "fine")  # type: ignore[misc]
        record = json.loads(raw)
        planted = {**record, "id": "bogus", "state": "half-done"}
        await queue.client.hset(queue.keys.jobs, "bogus", json.dumps(planted))  # type: ignore[misc]
        report = await status_sync(queue, backend)
        assert report.unreadable == ["bogus"]  # told, so that ingestctl exits 1
        got = await row(backend, "fine")
        assert got is not None and got["status"] == "queued"
        assert await row(backend, "bogus") is None
    finally:
        await backend.aclose()


async def test_a_huge_result_stays_in_redis_and_the_row_says_it_was_left_out(
    store: Store, queue: JobQueue
) -> None:
    backend = store.backend()
    try:
        big = {"text": "x" * 100_000}
        await queue.enqueue(payload("big"))
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None
        assert await queue.complete("big", claim.token, big)
        p = StatusProjector(queue.client, queue.keys, backend, consumer="p")
        assert await p.drain(10.0)
        got = await row(backend, "big")
        assert got is not None and got["status"] == "completed"
        assert got["result"]["result_omitted"] == "larger than 64 KiB"
        record = await queue.get("big")
        assert record is not None and record.result == big
    finally:
        await backend.aclose()


async def test_an_entry_that_breaks_the_parser_is_acknowledged_and_trimmed(
    queue: JobQueue, sqlite_backend: StatusBackend
) -> None:
    stream = queue.keys.status_outbox
    await queue.enqueue(payload("before"))
    fields = {"job": "poison", "kind": "f", "tenant": "t", "state": "completed",
              "rev": "1", "run": "1000", "attempt": "1", "max": "3", "progress": "100",
              "started": "1000", "finished": "2000", "rss": "1e400"}  # fmt: skip
    await queue.client.xadd(stream, fields)  # type: ignore[arg-type]
    await queue.enqueue(payload("after"))
    p = StatusProjector(queue.client, queue.keys, sqlite_backend, consumer="p")
    assert await p.drain(10.0)
    assert p.stats.bad_entries == 1
    assert (await row(sqlite_backend, "after")) is not None
    state = await outbox_state(queue.client, stream)
    assert state.unprojected == 0
    await trim_outbox(queue.client, stream, state)
    assert await queue.client.xlen(stream) <= 1


async def test_other_groups_on_the_stream_do_not_hold_back_trimming(
    queue: JobQueue, sqlite_backend: StatusBackend
) -> None:
    stream = queue.keys.status_outbox
    for i in range(5):
        await queue.enqueue(payload(f"g-{i}"))
    await queue.client.xgroup_create(stream, "someone-elses", id="0")
    p = StatusProjector(queue.client, queue.keys, sqlite_backend, consumer="p")
    assert await p.drain(10.0)
    state = await outbox_state(queue.client, stream)
    assert state.unprojected == 0 and state.has_group
    await trim_outbox(queue.client, stream, state)
    assert await queue.client.xlen(stream) <= 1


async def test_a_vanished_group_is_made_again_and_nothing_unread_is_trimmed(
    queue: JobQueue, sqlite_backend: StatusBackend
) -> None:
    service = StatusService(queue, sqlite_backend, consumer="d", reconcile_interval_s=3600)
    service.start()
    try:
        await queue.enqueue(payload("v-0"))
        await until(lambda: _exists(sqlite_backend, "v-0"))
        # What a Redis restarted without persistence looks like to a running daemon.
        await queue.client.xgroup_destroy(queue.keys.status_outbox, GROUP)
        for i in range(1, 4):
            await queue.enqueue(payload(f"v-{i}"))
        for i in range(1, 4):
            await until(lambda i=i: _exists(sqlite_backend, f"v-{i}"), within_s=20)
    finally:
        await service.aclose(5.0)


async def _exists(backend: StatusBackend, job_id: str) -> bool:
    return await backend.fetch(job_id) is not None


async def test_a_row_of_another_tenant_is_reported_and_left_alone(
    store: Store, queue: JobQueue
) -> None:
    backend = store.backend()
    try:
        # Tenant A's job finished and left Redis long ago; its row remains.
        await backend.apply(
            [StatusUpdate(job_id="shared", tenant_id="tenant-a", status="completed", rev=9)]
        )
        await queue.enqueue(payload("shared", tenant="tenant-b"))
        report = await status_sync(queue, backend)
        assert report.foreign == ["shared"] and report.written == 0
        got = await row(backend, "shared")
        assert got is not None and got["tenant_id"] == "tenant-a"
    finally:
        await backend.aclose()


async def test_status_sync_writes_directly_and_leaves_the_outbox_to_the_daemons(
    queue: JobQueue, sqlite_backend: StatusBackend
) -> None:
    for i in range(3):
        await queue.enqueue(payload(f"d-{i}"))
    p = StatusProjector(queue.client, queue.keys, sqlite_backend, consumer="p")
    await p.ensure_group()
    report = await status_sync(queue, sqlite_backend)
    assert sorted(report.missing) == ["d-0", "d-1", "d-2"] and report.written == 3
    state = await outbox_state(queue.client, queue.keys.status_outbox)
    assert state.unprojected == 3  # still there for the projectors: none was taken


def test_ingestctl_status_sync_refuses_to_guess_a_store(queue_name: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "SUPABASE_"))}
    r = subprocess.run(
        [INGESTCTL, "--queue", queue_name, "status-sync"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no status store configured" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.rglob("*.sqlite3"))
    ok = subprocess.run(
        [INGESTCTL, "--queue", queue_name, "status-sync", "--json"],
        env={
            **env,
            "INGEST_STATUS_BACKEND": "sqlite",
            "INGEST_STATUS_SQLITE_PATH": str(tmp_path / "s.sqlite3"),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["store"] == "sqlite"


def test_a_row_never_has_a_negative_duration() -> None:
    fields = {"job": "j", "kind": "f", "tenant": "t", "state": "completed", "rev": "3",
              "run": "1000", "attempt": "1", "max": "3", "progress": "100",
              "started": "5000", "finished": "4000"}  # fmt: skip
    assert row_from_fields(fields, "q").duration_ms == 0
