"""Issue 5 through the daemon: the status rows real daemons write to each real store, and a
store that is down while jobs run (jobs keep their speed; shutdown says what was not written)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from api.views import job_view
from supervisor.queue.states import JobState
from supervisor.status import build_status_backend
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until
from tests.integration.conftest import EXIT_BOUND_S
from tests.status.postgrest_standin import StandIn, service_key

BACKENDS = ("postgres", "sqlite", "supabase")


def backend_env(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[dict[str, str], dict[str, Any]]:
    """The daemon's environment for a status backend, and build_status_backend's kwargs."""
    if kind == "sqlite":
        path = str(tmp_path / "status.sqlite3")
        return (
            {"INGEST_STATUS_BACKEND": "sqlite", "INGEST_STATUS_SQLITE_PATH": path},
            {"sqlite_path": path},
        )
    if kind == "postgres":
        dsn: str = request.getfixturevalue("status_db")
        return {"INGEST_STATUS_BACKEND": "postgres", "INGEST_STATUS_DSN": dsn}, {"dsn": dsn}
    standin: StandIn = request.getfixturevalue("standin")
    key = service_key()
    return (
        {
            "INGEST_STATUS_BACKEND": "supabase",
            "SUPABASE_URL": standin.url,
            "SUPABASE_SERVICE_ROLE_KEY": key,
        },
        {"supabase_url": standin.url, "supabase_key": key},
    )


def fetch_rows(kind: str, kwargs: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        backend = build_status_backend(kind, **kwargs)
        try:
            return {i: await backend.fetch(i) for i in ids}
        finally:
            await backend.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("kind", BACKENDS)
def test_rows_after_completed_failed_cancelled_and_retried_jobs(
    kind: str,
    start_daemon: Callable[..., DaemonProcess],
    q: SyncQueue,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    env, kwargs = backend_env(kind, request, tmp_path)
    q.enqueue_many(
        [
            job("st-done"),
            job("st-bad", exit=65),
            job("st-flaky", fail_until_attempt=2),
            job("st-cancel", sleep=30, max_attempts=1),
        ]
    )
    daemon = start_daemon(INGEST_CONCURRENCY="4", **env)
    # The long job's row shows it running, with progress, before it is cancelled.
    wait_until(
        lambda: (
            (r := fetch_rows(kind, kwargs, ["st-cancel"])["st-cancel"]) is not None
            and r["status"] == "processing"
            and r["progress"] >= 1
        ),
        20,
        "processing row with progress",
        interval=0.1,
    )
    assert q.cancel("st-cancel") == "requested"
    ids = ["st-done", "st-bad", "st-flaky", "st-cancel"]
    final = {
        "st-done": "completed",
        "st-bad": "failed",
        "st-flaky": "completed",
        "st-cancel": "cancelled",
    }
    holder: dict[str, dict[str, Any]] = {}

    def rows_final() -> bool:
        holder["rows"] = fetch_rows(kind, kwargs, ids)
        return all((r := holder["rows"][i]) and r["status"] == final[i] for i in ids)

    wait_until(rows_final, 20, "final rows", interval=0.1)
    rows = holder["rows"]
    worker = q.get("st-done").worker_id

    done = rows["st-done"]
    assert done["tenant_id"] == "tenant-a"
    assert done["progress"] == 100
    assert done["attempt"] == 1 and done["max_attempts"] == 3
    assert done["error"] is None
    assert done["result"] == {"job_id": "st-done", "attempt": 1}
    assert done["worker_id"] == worker
    for row in rows.values():
        assert row["queued_at"] <= row["started_at"] <= row["finished_at"]
        assert row["duration_ms"] > 0
        measured_ms = (row["finished_at"] - row["started_at"]) * 1000
        assert abs(row["duration_ms"] - measured_ms) < 1000
        assert row["peak_rss_bytes"] > 1024 * 1024  # a Python child's resident set

    bad = rows["st-bad"]
    assert bad["attempt"] == 1  # exit 65 is never retried
    assert bad["error"].startswith("Worker exited with code 65")
    assert "failing with 65" in bad["error"]
    assert bad["result"] is None

    flaky = rows["st-flaky"]  # the final attempt's row, not a mix with the first
    assert flaky["attempt"] == 2
    assert flaky["error"] is None
    assert flaky["result"] == {"job_id": "st-flaky", "attempt": 2}
    assert flaky["progress"] == 100

    cancelled = rows["st-cancel"]
    assert cancelled["attempt"] == 1
    assert 1 <= cancelled["progress"] < 100
    assert cancelled["result"] is None
    assert q.get("st-cancel").state is JobState.CANCELLED

    daemon.signal(15)
    assert daemon.wait_exit(EXIT_BOUND_S) == 0
    assert "unwritten" not in daemon.log()


def test_the_childs_last_progress_message_is_what_every_view_shows(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, tmp_path: Path
) -> None:
    """The built-in worker ends with `PROGRESS: 100 done`: the job record (what ingestctl,
    the API and the demo read) and the status row both end on that message."""
    path = str(tmp_path / "status.sqlite3")
    env = {"INGEST_STATUS_BACKEND": "sqlite", "INGEST_STATUS_SQLITE_PATH": path}
    kwargs = {"sqlite_path": path}
    payload = {
        "job_id": "last-msg",
        "tenant_id": "tenant-a",
        "data_source": {"type": "text", "text": "A short document. Two sentences."},
    }
    q.enqueue(payload)
    daemon = start_daemon(INGEST_WORKER_COMMAND="", INGEST_CHUNK_STORE="none", **env)
    wait_until(lambda: q.get("last-msg").state is JobState.COMPLETED, 30, "job completed")
    record = q.get("last-msg")
    assert record.progress_message == "done"
    assert job_view(record, q.queue, ()).message == "done"
    shown = subprocess.run(
        [
            str(Path(sys.executable).parent / "ingestctl"),
            "--queue",
            q.queue,
            "status",
            "last-msg",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert json.loads(shown.stdout)["message"] == "done"
    wait_until(
        lambda: (
            (r := fetch_rows("sqlite", kwargs, ["last-msg"])["last-msg"]) is not None
            and r["status"] == "completed"
        ),
        20,
        "completed row",
        interval=0.1,
    )
    row = fetch_rows("sqlite", kwargs, ["last-msg"])["last-msg"]
    assert row["progress_message"] == "done"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(EXIT_BOUND_S) == 0


def test_progress_rows_are_throttled_and_the_last_one_still_arrives(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, tmp_path: Path
) -> None:
    """Eleven PROGRESS lines at once, then silence: the row gets few progress rows, yet
    shows the last progress while the child is still quiet, not only when it ends."""
    import redis

    from supervisor.queue.keys import QueueKeys
    from tests.conftest import REDIS_URL

    path = str(tmp_path / "status.sqlite3")
    kwargs = {"sqlite_path": path}
    q.enqueue(job("burst", linger=20))
    daemon = start_daemon(INGEST_STATUS_BACKEND="sqlite", INGEST_STATUS_SQLITE_PATH=path)
    wait_until(
        lambda: (
            (r := fetch_rows("sqlite", kwargs, ["burst"])["burst"]) is not None
            and r["progress"] == 100
            and r["progress_message"] == "step 10"
        ),
        10,
        "the last progress in the row during the child's silence",
        interval=0.1,
    )
    assert q.get("burst").state is JobState.ACTIVE
    client = redis.Redis.from_url(REDIS_URL)
    try:
        entries = client.xrange(QueueKeys(q.queue).status_outbox)
    finally:
        client.close()
    ticks = [f for _id, f in entries if f[b"job"] == b"burst" and f[b"kind"] == b"p"]
    assert 1 <= len(ticks) <= 3, len(ticks)
    assert q.cancel("burst") == "requested"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(EXIT_BOUND_S) == 0
