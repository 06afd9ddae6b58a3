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


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_daemon_killed_with_sigkill_leaves_no_process_of_its_jobs(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, run_log: Path
) -> None:
    """The fork server outlives the daemon just long enough to kill each job's session,
    so a job's own children (which no parent-death signal covers) die too."""
    from tests.daemon.conftest import read_runs

    q.enqueue(job("held", sleep=60, grandchild=True))
    daemon = start_daemon()
    wait_until(lambda: any(r.get("grandchild") for r in read_runs(run_log)), 20, "job started")
    run = next(r for r in read_runs(run_log) if r.get("grandchild"))
    assert _alive(run["pid"]) and _alive(run["grandchild"])
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit()
    wait_until(lambda: not _alive(run["pid"]), 10, "the job's process gone")
    wait_until(lambda: not _alive(run["grandchild"]), 10, "the job's own child gone")


def test_a_fork_server_killed_under_running_jobs_costs_them_no_attempt(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, run_log: Path
) -> None:
    """Another process (here the test; it could be a hostile child of the same user) kills
    the fork server: the jobs it took with it go back to the queue and run again."""
    from tests.daemon.conftest import read_runs

    q.enqueue(job("victim", sleep=4, max_attempts=1))
    daemon = start_daemon()
    wait_until(lambda: bool(read_runs(run_log)), 20, "job started")
    for server in servers_of(daemon):
        server.kill()
    wait_until(lambda: q.get("victim").state is JobState.COMPLETED, 30, "victim completed")
    rec = q.get("victim")
    assert rec.attempt == 1 and rec.error is None
    assert len(read_runs(run_log)) == 2  # ran again after the server's death
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_a_job_that_keeps_killing_its_fork_server_fails_alone(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    """A child of the daemon's user can kill its parent, the fork server. One such death
    costs the jobs it hit no attempt; a job under which the server keeps dying is failed
    after a few, so it cannot interrupt every job beside it for ever."""
    killer = "/bin/sh -c 'sleep 0.3; kill -9 $PPID; sleep 30'"
    daemon = start_daemon(INGEST_WORKER_COMMAND=killer, INGEST_CONCURRENCY="1")
    q.enqueue(job("killer", max_attempts=1))
    wait_until(lambda: q.get("killer").state is JobState.FAILED, 60, "the killer failed")
    rec = q.get("killer")
    assert rec.error is not None and "fork server" in rec.error, rec.error
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_a_child_that_stops_its_fork_server_holds_up_no_job(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    """A child of the daemon's user can send SIGSTOP to its parent, the fork server, which
    then answers no start and reports no exit. The daemon continues it: the other
    tenant's jobs start, and the stopper's own job ends as it would have."""
    daemon = start_daemon(INGEST_CONCURRENCY="2")
    q.enqueue({**job("stopper", stop_parent=True, max_attempts=1), "tenant_id": "tenant-x"})
    wait_until(lambda: q.get("stopper").state is not JobState.WAITING, 20, "stopper claimed")
    victims = [f"victim-{i}" for i in range(3)]
    q.enqueue_many([job(v, max_attempts=1) for v in victims])
    wait_until(
        lambda: all(q.get(v).state is JobState.COMPLETED for v in [*victims, "stopper"]),
        20,
        "every job completed",
    )
    assert "was stopped" in daemon.log()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_fast_temporary_failures_of_one_tenant_do_not_pause_the_others(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    """A fetch refused at once makes the built-in worker exit 75 (temporary) within
    milliseconds. That is the job's trouble, not a broken deploy: the start-failure gate,
    which pauses every slot, must not count it, or one tenant's bad URLs slow everyone."""
    import socket

    with socket.socket() as closed:  # a loopback port with nothing listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    daemon = start_daemon(
        INGEST_WORKER_COMMAND="",
        INGEST_CHILD_ENV="",
        INGEST_CHUNK_STORE="none",
        INGEST_CRAWL_ALLOW_PRIVATE="1",
        INGEST_CONCURRENCY="1",
    )
    daemon.wait_ready()
    refused = {"type": "url", "url": f"http://127.0.0.1:{port}/doc"}
    q.enqueue_many(
        [
            {
                "job_id": f"noisy-{i}",
                "tenant_id": "noisy",
                "data_source": refused,
                "max_attempts": 1,
            }
            for i in range(6)
        ]
    )
    q.enqueue(job("quiet"))
    try:
        wait_until(lambda: q.get("quiet").state is JobState.COMPLETED, 10, "the quiet job done")
    except AssertionError as exc:
        raise AssertionError(daemon.log()[-2000:]) from exc
    assert q.get("noisy-5").error is not None
    assert "pausing spawns" not in daemon.log()
