"""The daemon end to end with INGEST_SPAWN_MODE=zygote and the real ingest_worker."""

from __future__ import annotations

import signal
from collections.abc import Callable

import psutil

from supervisor.queue.states import JobState
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until


def zygotes_of(daemon: DaemonProcess) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(daemon.pid).children()
        if any("zygote_child" in part for part in p.cmdline())
    ]


def test_zygote_mode_runs_50_jobs_and_stops_cleanly(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    daemon = start_daemon(
        INGEST_SPAWN_MODE="zygote",
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
    zygotes = zygotes_of(daemon)
    assert len(zygotes) == 1, "one zygote serves every job"
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    wait_until(lambda: not zygotes[0].is_running(), 5, "zygote gone")
    assert "children lost" not in daemon.log()
