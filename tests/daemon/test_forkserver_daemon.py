"""The daemon end to end with its default child, the built-in ingest_worker, every job
forked from the one fork server the daemon starts."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import psutil

from supervisor.queue.states import JobState
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until


def servers_of(daemon: DaemonProcess) -> list[psutil.Process]:
    return [p for p in psutil.Process(daemon.pid).children() if p.name() == "ingest-forksrv"]


def test_one_fork_server_runs_50_jobs_and_stops_cleanly(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    daemon = start_daemon(
        INGEST_WORKER_COMMAND="",  # empty is unset: the built-in ingest_worker
        INGEST_CHILD_ENV="",
        INGEST_CHUNK_STORE="none",
        INGEST_CONCURRENCY="2",
    )
    daemon.wait_ready()
    ids = [f"z{i}" for i in range(50)]
    q.enqueue_many([job(i) for i in ids])
    wait_until(lambda: q.counts()["completed"] == 50, 90, "50 completed")
    rec = q.get("z7")
    assert rec.state is JobState.COMPLETED
    assert rec.result["store"] == "none" and rec.result["chunks"] >= 1
    servers = servers_of(daemon)
    assert len(servers) == 1, "one fork server serves every job"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    wait_until(lambda: not servers[0].is_running(), 5, "fork server gone")
    assert "children lost" not in daemon.log()


def test_exit_0_with_a_broken_result_fails_the_job_at_once(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, run_log: Path
) -> None:
    """A custom command (the test child) exec'd by the fork server promises a RESULT and
    breaks it: the job fails with the reason, on its first attempt of three."""
    daemon = start_daemon()
    daemon.wait_ready()
    q.enqueue(job("broken", max_attempts=3, bad_result=True))
    wait_until(lambda: q.get("broken").state is JobState.FAILED, 30, "job failed")
    rec = q.get("broken")
    assert rec.attempt == 1 and rec.result is None
    assert rec.error is not None
    assert rec.error.startswith("Worker exited 0 with an unusable RESULT line: RESULT is not")
    starts = [json.loads(line) for line in run_log.read_text().splitlines()]
    assert [s["job_id"] for s in starts] == ["broken"]
