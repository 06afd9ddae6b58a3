"""The daemon end to end: real daemon processes, real children, real signals, real Redis."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from supervisor.execution import FIRST_PROGRESS_AFTER_S
from supervisor.queue.states import JobState
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, read_runs, wait_until
from tests.redis_server import PrivateRedis


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private Redis that keeps nothing across a restart (ask for it before
    start_daemon: fixtures end in reverse order, the daemons first)."""
    server = PrivateRedis(tmp_path / "volatile-redis", persistent=False)
    server.start()
    yield server
    server.close()


def _states(q: SyncQueue, ids: list[str]) -> dict[str, str]:
    out = {}
    for job_id in ids:
        rec = q.get(job_id)
        out[job_id] = rec.state.value if rec else "missing"
    return out


def test_two_daemons_complete_200_jobs_exactly_once(start_daemon, q, run_log: Path) -> None:
    ids = [f"bulk-{i:03d}" for i in range(200)]
    q.enqueue_many([job(i) for i in ids])
    a, b = start_daemon(), start_daemon()
    wait_until(lambda: q.counts()["completed"] == 200, 120, "200 completed")
    runs = Counter(r["job_id"] for r in read_runs(run_log))
    assert set(runs) == set(ids)
    assert max(runs.values()) == 1
    assert {q.get(i).attempt for i in ids} == {1}
    # Both daemons took part.
    assert " ready: worker " in a.log() and " ready: worker " in b.log()
    for d in (a, b):
        d.signal(signal.SIGTERM)
        assert d.wait_exit() == 0
        assert d.job_dirs_left() == []  # kept ones included: removed at exit


def test_a_directory_a_child_locked_is_removed_by_a_daemon_without_privileges(
    start_daemon, q
) -> None:
    """A child can take its own rights away from a directory it made (mode 000). The
    shipped daemon runs as an ordinary user, which cannot list or empty such a directory
    until it gives the rights back: every job's directory must still go."""
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    no_file_privileges = (setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--")
    lock = (
        "import os, sys; sys.stdin.read(); os.makedirs('d/e'); open('d/e/f', 'w').write('x'); "
        "os.symlink('/etc', 'd/etc'); os.chmod('d/e', 0); os.chmod('d', 0)"
    )
    etc_mode = Path("/etc").stat().st_mode
    d = start_daemon(
        prefix=no_file_privileges,
        INGEST_WORKER_COMMAND=shlex.join([sys.executable, "-c", lock]),
    )
    q.enqueue_many([job(f"lock-{i}") for i in range(3)])
    wait_until(lambda: q.counts()["completed"] == 3, 30, "3 completed")
    wait_until(lambda: d.job_dirs_left() == [], 10, "every job directory removed")
    assert Path("/etc").stat().st_mode == etc_mode  # the child's symlink was not followed
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


LEAVE_FILES = """
import os, sys
sys.stdin.read()
open("out.txt", "w").write("a tenant's document")
os.makedirs("d/e")
open("d/e/f", "w").write("x")
os.chmod("d/e", 0)
print("RESULT: 1", flush=True)
"""


def test_what_a_child_user_leaves_is_removed_by_a_daemon_without_file_privileges(
    start_daemon, q, request: pytest.FixtureRequest
) -> None:
    """With INGEST_CHILD_USER the job's directory belongs to that user, and a daemon
    confined to the documented bounding set (root with CAP_SETUID, CAP_SETGID, CAP_CHOWN
    and CAP_KILL only) may not remove what the child made in it: the daemon has it removed
    as the child's user."""
    setpriv, python = shutil.which("setpriv"), shutil.which("python3", path="/usr/bin:/bin")
    if setpriv is None or python is None or os.geteuid() != 0:
        pytest.skip("needs root, setpriv (util-linux) and /usr/bin/python3")
    shared = Path(tempfile.mkdtemp(prefix="leave-files-", dir="/tmp"))  # nobody reaches it
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    (shared / "jobs").mkdir()
    for path in (shared, shared / "jobs"):
        path.chmod(0o711)  # the child user reaches its script and directory, lists nothing
    child = shared / "leave_files.py"
    child.write_text(LEAVE_FILES)
    child.chmod(0o644)
    d = start_daemon(
        prefix=(setpriv, "--bounding-set=-all,+setuid,+setgid,+chown,+kill", "--"),
        INGEST_WORKER_COMMAND=shlex.join([python, str(child)]),
        INGEST_CHILD_USER="nobody",
        TMPDIR=str(shared / "jobs"),
    )
    q.enqueue_many([job(f"leave-{i}") for i in range(2)])
    wait_until(lambda: q.counts()["completed"] == 2, 30, "2 completed")
    wait_until(lambda: d.job_dirs_left() == [], 10, "every job directory removed")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


def test_a_child_user_the_daemon_could_not_signal_is_refused_at_start(start_daemon) -> None:
    """Without CAP_KILL a daemon may not signal another user's processes: no timeout,
    cancel or stop would reach a child under INGEST_CHILD_USER, and the child would
    outlive the daemon. Refused at start, naming what is missing."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv (util-linux)")
    d = start_daemon(
        prefix=(setpriv, "--bounding-set=-kill", "--inh-caps=-kill", "--"),
        INGEST_CHILD_USER="nobody",
    )
    assert d.wait_exit() == 2
    assert "CAP_KILL" in d.log() and "INGEST_CHILD_USER" in d.log(), d.log()


def test_child_user_checks_read_capabilities_and_the_proc_mount() -> None:
    """What a daemon needs to run, stop and sweep another user's processes: to be root
    (only root hands its capabilities on to the fork server, and loses them in a child
    that switches user), the four capabilities of the documented bounding set, and /proc
    showing them (systemd's ProtectProc=invisible mounts it with hidepid)."""
    from supervisor.hardening import child_user_problem

    full = "CapEff:\t000001ffffffffff\n"
    no_kill = "CapEff:\t000001ffffffffdf\n"
    bounded = "CapEff:\t00000000000000e1\n"  # CAP_CHOWN, CAP_KILL, CAP_SETGID, CAP_SETUID
    no_chown = "CapEff:\t00000000000000e0\n"
    plain = "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
    hidden = "22 27 0:21 / /proc rw,relatime - proc proc rw,hidepid=invisible\n"
    assert child_user_problem(full, plain, euid=0) is None
    assert child_user_problem(bounded, plain, euid=0) is None
    assert "not root" in (child_user_problem(full, plain, euid=1000) or "")
    assert "CAP_KILL" in (child_user_problem(no_kill, plain, euid=0) or "")
    assert "CAP_CHOWN" in (child_user_problem(no_chown, plain, euid=0) or "")
    assert "ProtectProc" in (child_user_problem(bounded, hidden, euid=0) or "")
    assert child_user_problem(full, hidden, euid=0) is None  # CAP_SYS_PTRACE sees through it
    assert child_user_problem(bounded, hidden.replace("invisible", "0"), euid=0) is None
    in_group = hidden.replace("invisible", "2,gid=1001")
    assert child_user_problem(bounded, in_group, euid=0, groups={1001}) is None
    assert "ProtectProc" in (child_user_problem(bounded, in_group, euid=0, groups={5}) or "")
    assert child_user_problem("Name:\tx\n", plain, euid=0) is None  # nothing to read


LOOK_AROUND = """
import json, os, sys
sys.stdin.read()
parent = os.path.dirname(os.getcwd())
try:
    os.listdir(parent)
    listed = True
except PermissionError:
    listed = False
st = os.stat(parent)
print("RESULT: " + json.dumps({"parent": parent, "listed": listed, "mode": st.st_mode & 0o777,
                               "uid": st.st_uid}), flush=True)
"""


def test_a_child_user_cannot_find_or_remove_other_jobs_directories(
    start_daemon, q, request: pytest.FixtureRequest
) -> None:
    """Job directories are made in a directory of the daemon's own (0711), not in /tmp
    itself: a child under INGEST_CHILD_USER reaches its own directory but can neither list
    nor remove another job's, even one made a moment ago and not yet entered."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None or os.geteuid() != 0:
        pytest.skip("needs root and /usr/bin/python3")
    shared = Path(tempfile.mkdtemp(prefix="look-around-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o711)
    child = shared / "look_around.py"
    child.write_text(LOOK_AROUND)
    child.chmod(0o644)
    d = start_daemon(
        INGEST_WORKER_COMMAND=shlex.join([python, str(child)]),
        INGEST_CHILD_USER="nobody",
        TMPDIR="/tmp",
    )
    q.enqueue(job("look"))
    wait_until(lambda: q.get("look").state is JobState.COMPLETED, 30, "look completed")
    seen = q.get("look").result
    parent = Path(seen["parent"])
    assert parent.parent == Path("/tmp") and parent.name.startswith("ingest-jobs-")
    assert (seen["listed"], seen["mode"], seen["uid"]) == (False, 0o711, 0)
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert not parent.exists()  # the daemon's own directory goes with it


def test_retry_then_success_and_permanent_failure(start_daemon, q) -> None:
    q.enqueue(job("flaky", fail_until_attempt=2))
    q.enqueue(job("bad-input", exit=65))
    start_daemon()
    wait_until(lambda: q.get("flaky").state is JobState.COMPLETED, 30, "flaky completed")
    flaky = q.get("flaky")
    assert flaky.attempt == 2
    assert flaky.result == {"job_id": "flaky", "attempt": 2}
    wait_until(lambda: q.get("bad-input").state is JobState.FAILED, 30, "bad-input failed")
    bad = q.get("bad-input")
    assert bad.attempt == 1  # exit 65 never retries
    assert bad.error.startswith("Worker exited with code 65")
    assert "failing with 65" in bad.error


def test_timeout_kills_the_child_and_fails_the_job(start_daemon, q, run_log: Path) -> None:
    q.enqueue(job("slow", sleep=60, ignore_term=True, timeout_s=1, max_attempts=1))
    start_daemon()
    wait_until(lambda: q.get("slow").state is JobState.FAILED, 30, "slow failed")
    rec = q.get("slow")
    assert "timed out" in rec.error
    pid = read_runs(run_log)[0]["pid"]
    wait_until(lambda: not psutil.pid_exists(pid), 5, "timed-out child gone")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_releases_running_job_to_another_daemon(
    start_daemon, q, run_log: Path, stop: signal.Signals
) -> None:
    """SIGHUP (`supervisorctl signal HUP`, an operator's reload) stops as SIGTERM does:
    the supervisor manager starts the daemon again."""
    q.enqueue(job("long", sleep=8))
    a = start_daemon(INGEST_SHUTDOWN_GRACE_SECONDS="0.5")
    a.wait_ready()
    wait_until(lambda: q.get("long").state is JobState.ACTIVE, 20, "long active")
    first_pid = wait_until(lambda: read_runs(run_log), 10, "child started")[0]["pid"]
    a.signal(stop)
    assert a.wait_exit(20) == 0
    assert not psutil.pid_exists(first_pid)
    rec = q.get("long")
    assert rec.state is JobState.WAITING
    assert rec.attempt == 0  # released without spending an attempt
    assert "released" in a.log()
    start_daemon()
    wait_until(lambda: q.get("long").state is JobState.COMPLETED, 40, "long completed")
    assert q.get("long").attempt == 1


def test_a_stop_as_a_child_ends_still_writes_its_outcome(start_daemon, private_redis) -> None:
    """A slot starts its next job while the last one's outcome is still being written; a
    stop that comes then waits for that write. The child pauses Redis's writes for 3 s,
    longer than the daemon's last calls before it exits wait (its worker entry's removal,
    2 s), then stops the daemon, just before its RESULT: the outcome is written once the
    pause ends, and only then does the daemon exit. (The lease is long enough that no
    renewal gives up during the pause.)"""
    d = start_daemon(
        redis_url=private_redis.url,
        INGEST_CONCURRENCY="1",
        INGEST_LEASE_SECONDS="60",
        INGEST_SHUTDOWN_GRACE_SECONDS="10",
    )
    d.wait_ready()
    queue = SyncQueue(d.queue, private_redis.url)
    queue.enqueue(job("last", term_pid=d.pid, pause_redis=[private_redis.url, 3000]))
    queue.enqueue(job("next"))
    assert d.wait_exit(30) == 0, d.log()
    rec = queue.get("last")
    assert rec.state is JobState.COMPLETED, d.log()
    assert rec.result == {"job_id": "last", "attempt": 1}
    assert queue.get("next").state is JobState.WAITING  # no claim once stopping


def _postponed_scripts(client: redis.Redis) -> int:
    """Clients whose script call waits for a CLIENT PAUSE to end."""
    return sum(
        1
        for c in client.client_list()
        if c["cmd"] in ("evalsha", "eval") and "b" in c["flags"] and c["name"] != "test"
    )


@contextlib.contextmanager
def _stopped_while_a_claim_waits(
    start_daemon, private_redis: PrivateRedis, run_log: Path
) -> Iterator[tuple[DaemonProcess, redis.Redis, SyncQueue]]:
    """A one-slot daemon whose first job has ended while Redis's writes are paused, so that
    its completion and the claim of "second" both wait; SIGTERM sent and seen. The pause
    ends when the block does. The first job prints its progress at once and then stays
    quiet, so that once its progress is recorded the only scripts its end sends are its
    completion and the next claim; the heartbeat and the lease renewal are minutes apart."""
    d = start_daemon(
        redis_url=private_redis.url,
        INGEST_CONCURRENCY="1",
        INGEST_LEASE_SECONDS="600",
        INGEST_HEARTBEAT_TTL="300",
        INGEST_SHUTDOWN_GRACE_SECONDS="10",
    )
    d.wait_ready()
    client = redis.Redis.from_url(private_redis.url)
    client.client_setname("test")
    queue = SyncQueue(d.queue, private_redis.url)
    queue.enqueue(job("first", linger=2))
    first_pid = wait_until(lambda: read_runs(run_log), 20, "first started")[0]["pid"]
    queue.enqueue(job("second"))
    wait_until(lambda: queue.get("first").progress == 100, 20, "first's progress recorded")
    client.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
    try:
        wait_until(lambda: not psutil.pid_exists(first_pid), 20, "first child gone")
        wait_until(lambda: _postponed_scripts(client) >= 2, 5, "completion and claim waiting")
        d.signal(signal.SIGTERM)
        wait_until(lambda: "no new jobs" in d.log(), 5, "the stop seen")
        yield d, client, queue
    finally:
        client.execute_command("CLIENT", "UNPAUSE")


def _second_given_back(d: DaemonProcess, queue: SyncQueue, run_log: Path) -> None:
    assert d.wait_exit(30) == 0, d.log()
    assert "second claimed as the stop came; given back unstarted" in d.log(), d.log()
    assert queue.get("first").state is JobState.COMPLETED, d.log()
    second = queue.get("second")
    assert (second.state, second.attempt) == (JobState.WAITING, 0), d.log()
    assert [r["job_id"] for r in read_runs(run_log)] == ["first"]


def test_a_job_claimed_as_the_stop_comes_goes_back_unstarted(
    start_daemon, private_redis, run_log: Path
) -> None:
    """The stop comes while a claim is in flight (Redis's writes paused, so the claim waits
    for them): the job it brings is given back to the queue at once, unspent, and no child
    is started for it."""
    with _stopped_while_a_claim_waits(start_daemon, private_redis, run_log) as (d, _, queue):
        pass
    _second_given_back(d, queue, run_log)


def test_a_claim_that_failed_in_flight_at_the_stop_is_sent_again_and_given_back(
    start_daemon, private_redis, run_log: Path
) -> None:
    """As above, but the claim waiting for the pause loses its connection after the stop
    came: it may have taken a job whose reply was lost, so the slot sends it again with the
    same token and gives back what it brings (here "second", which the lost claim never
    took)."""
    with _stopped_while_a_claim_waits(start_daemon, private_redis, run_log) as (d, client, queue):
        client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        wait_until(lambda: _postponed_scripts(client) >= 1, 5, "the claim sent again")
    _second_given_back(d, queue, run_log)


def test_second_sigterm_skips_the_grace(start_daemon, q, run_log: Path) -> None:
    q.enqueue(job("long2", sleep=60))
    a = start_daemon(INGEST_SHUTDOWN_GRACE_SECONDS="120")
    a.wait_ready()
    wait_until(lambda: read_runs(run_log), 20, "child started")
    a.signal(signal.SIGTERM)
    wait_until(lambda: "no new jobs" in a.log(), 10, "drain started")
    a.signal(signal.SIGTERM)
    assert a.wait_exit(20) == 0
    assert q.get("long2").state is JobState.WAITING


def test_after_a_second_sigterm_a_child_s_release_outlasts_a_redis_restart(
    start_daemon, private_redis: PrivateRedis, run_log: Path
) -> None:
    """The second SIGTERM stops the running child at once, but a child that ignores SIGTERM
    still has its kill grace: the release written after it died must get its own seconds
    of retries (here Redis is down as the child dies and back half a second later), not a
    deadline that ran out while the child was being killed."""
    d = start_daemon(
        redis_url=private_redis.url,
        INGEST_SHUTDOWN_GRACE_SECONDS="120",
        INGEST_KILL_GRACE_SECONDS="3",
        INGEST_LEASE_SECONDS="60",  # the outage never makes the lease doubtful
    )
    d.wait_ready()
    queue = SyncQueue(d.queue, private_redis.url)
    queue.enqueue(job("ignores-term", sleep=60, ignore_term=True))
    child = wait_until(lambda: read_runs(run_log), 20, "child started")[0]["pid"]
    d.signal(signal.SIGTERM)
    wait_until(lambda: "no new jobs" in d.log(), 10, "drain started")
    d.signal(signal.SIGTERM)
    private_redis.stop()  # persistent: the job's record comes back with it
    wait_until(lambda: not psutil.pid_exists(child), 10, "the child killed after its grace")
    wait_until(lambda: "retrying" in d.log(), 5, "the release retried")
    private_redis.start()
    assert d.wait_exit(30) == 0
    assert queue.get("ignores-term").state is JobState.WAITING, d.log()


def test_a_redis_that_refuses_writes_at_the_stop_still_lets_the_daemon_end_cleanly(
    start_daemon, private_redis: PrivateRedis
) -> None:
    """A Redis that answers writes with an error (READONLY: an old master after a failover)
    as the daemon stops: what it cannot write is logged, every later step of the stop
    still runs, and the daemon exits 0 as with a Redis that is down."""
    d = start_daemon(redis_url=private_redis.url)
    d.wait_ready()
    client = redis.Redis.from_url(private_redis.url)
    client.execute_command("REPLICAOF", "127.0.0.1", "1")  # a replica now: writes refused
    try:
        d.signal(signal.SIGTERM)
        assert d.wait_exit(30) == 0, d.log()
    finally:
        client.execute_command("REPLICAOF", "NO", "ONE")
    assert "Traceback" not in d.log()
    assert " stopped" in d.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_during_start_up_is_a_clean_stop(start_daemon, sig: int) -> None:
    """Before its event loop runs (settings read, the fork server and the sinks being
    started), a stop signal is kept rather than killing the daemon by its default action:
    the daemon stops cleanly as soon as it can, exit 0, its jobs directory removed."""
    d = start_daemon()
    wait_until(lambda: "starting with" in d.log(), 20, "settings read")
    d.signal(sig)
    assert d.wait_exit(30) == 0, d.log()
    assert "Traceback" not in d.log()
    assert d.job_dirs_left() == []


def test_sigkill_of_daemon_job_recovered_after_one_lease(start_daemon, q, run_log: Path) -> None:
    q.enqueue(job("orphan", sleep=4))
    a = start_daemon(INGEST_LEASE_SECONDS="2")
    wait_until(lambda: read_runs(run_log), 20, "child started")
    child_pid = read_runs(run_log)[0]["pid"]
    a.signal(signal.SIGKILL)
    a.wait_exit(10)
    # The child dies with its supervisor (parent-death signal), it does not run on unowned.
    wait_until(lambda: not psutil.pid_exists(child_pid), 5, "orphaned child gone")
    start_daemon(INGEST_LEASE_SECONDS="2")
    wait_until(lambda: q.get("orphan").state is JobState.COMPLETED, 40, "orphan completed")
    rec = q.get("orphan")
    assert rec.stalls == 1
    assert rec.attempt == 1  # a stall does not spend an attempt


def test_what_a_killed_daemon_left_in_its_temporary_directory_is_removed_by_the_next(
    start_daemon, q, run_log: Path, tmp_path: Path
) -> None:
    """A daemon killed with SIGKILL (or by any signal it does not handle) cannot remove
    its job directories; the next daemon on the same temporary directory does, and leaves
    those of daemons still running alone."""
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    q.enqueue(job("left", sleep=30))
    a = start_daemon(TMPDIR=str(shared))
    wait_until(lambda: read_runs(run_log), 20, "child started")
    (root,) = shared.glob("ingest-jobs-*")
    assert [p for p in root.iterdir() if p.name.startswith("ingest-job-")]
    alive = start_daemon(TMPDIR=str(shared))  # running: its directory stays
    alive.wait_ready()
    assert len(list(shared.glob("ingest-jobs-*"))) == 2
    a.signal(signal.SIGKILL)
    a.wait_exit(10)
    b = start_daemon(TMPDIR=str(shared))
    b.wait_ready()
    assert not root.exists()  # removed before b took any job
    assert "that ended uncleanly" in b.log()
    assert len(list(shared.glob("ingest-jobs-*"))) == 2  # alive's and b's
    for d in (alive, b):
        d.signal(signal.SIGTERM)
        assert d.wait_exit() == 0
    assert list(shared.iterdir()) == []


def test_a_daemon_whose_children_cannot_start_says_so_in_its_heartbeat(
    start_daemon, q, tmp_path: Path
) -> None:
    """A deploy removed the worker after the daemon started: every start fails, spawns
    pause again and again, and the heartbeat (what /health/queue reads) counts the pauses."""
    worker = tmp_path / "worker.py"
    worker.write_text("import sys; sys.stdin.read(); print('PROGRESS: 100 done')\n")
    start_daemon(INGEST_WORKER_COMMAND=f"{sys.executable} {worker}").wait_ready()
    worker.unlink()
    q.enqueue_many([job(f"nowhere-{i}", max_attempts=20) for i in range(6)])

    def pauses() -> int:
        beats = q.live_workers()
        return int(beats[0].get("spawn_pauses", 0)) if beats else 0

    wait_until(lambda: pauses() >= 3, 30, "three pauses in a row in the heartbeat")


def test_cancel_reaches_a_running_child_quickly(start_daemon, q, run_log: Path) -> None:
    q.enqueue(job("cancel-me", sleep=60))
    start_daemon()
    wait_until(lambda: read_runs(run_log), 20, "child started")
    pid = read_runs(run_log)[0]["pid"]
    assert q.cancel("cancel-me") == "requested"
    wait_until(lambda: not psutil.pid_exists(pid), 3, "cancelled child gone")
    wait_until(lambda: q.get("cancel-me").state is JobState.CANCELLED, 5, "cancelled state")


def _running_when_redis_goes(
    start_daemon: Any, private_redis: PrivateRedis, run_log: Path, payload: dict[str, Any]
) -> DaemonProcess:
    """A daemon (60 s lease, 1 s grace) running `payload`'s job when its Redis stops."""
    d = start_daemon(
        redis_url=private_redis.url,
        INGEST_LEASE_SECONDS="60",
        INGEST_SHUTDOWN_GRACE_SECONDS="1",
    )
    SyncQueue(d.queue, private_redis.url).enqueue(payload)
    wait_until(lambda: read_runs(run_log), 20, "child started")
    private_redis.stop()
    return d


def _stops_within_its_budget(d: DaemonProcess) -> None:
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(50) == 0, d.log()
    assert time.monotonic() - started < 30.0, d.log()
    assert "Traceback" not in d.log()


def test_a_stop_while_redis_is_down_ends_within_the_grace_not_the_lease(
    start_daemon, private_redis, run_log
) -> None:
    """SIGTERM with Redis gone: the job is stopped at the end of the grace and its release
    cannot be written; the daemon gives up on it then (the lease brings the job back),
    not when the lease would have run out."""
    d = _running_when_redis_goes(start_daemon, private_redis, run_log, job("held", sleep=60))
    _stops_within_its_budget(d)


def test_a_stop_cuts_short_a_settle_already_retrying(start_daemon, private_redis, run_log) -> None:
    """The job ended while Redis was down, and its completion has been retrying since;
    then the operator stops the daemon. The stop ends within its budget too."""
    d = _running_when_redis_goes(
        start_daemon, private_redis, run_log, job("ends-unsettled", sleep=1)
    )
    wait_until(lambda: "settling ends-unsettled failed" in d.log(), 20, "the settle retrying")
    _stops_within_its_budget(d)
    # Counted as unrecorded (Redis away), not as a lease another holder took; every line
    # names its error.
    assert "outcome=unrecorded" in d.log() and "outcome=lease_lost" not in d.log(), d.log()
    assert " ()" not in d.log(), d.log()


def test_redis_restart_while_jobs_run_loses_nothing(start_daemon, private_redis, run_log) -> None:
    d = start_daemon(redis_url=private_redis.url, INGEST_LEASE_SECONDS="6")
    queue = SyncQueue(d.queue, private_redis.url)
    ids = [f"r-{i:02d}" for i in range(20)]
    queue.enqueue_many([job(i, sleep=0.5) for i in ids])
    wait_until(lambda: queue.counts()["completed"] >= 3, 30, "some completed")
    private_redis.restart()
    wait_until(lambda: queue.counts()["completed"] == 20, 90, "all 20 completed after restart")
    assert _states(queue, ids) == dict.fromkeys(ids, "completed")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0


def test_a_job_redis_forgot_in_a_restart_is_stopped_at_the_next_heartbeat(
    volatile_redis: PrivateRedis, start_daemon, run_log: Path
) -> None:
    """Redis came back without its last writes (no persistence here; `appendfsync
    everysec` or an asynchronous failover in production): the lease of a running job may
    be gone and the job claimed again elsewhere. The daemon notices the new Redis server
    at its next heartbeat and checks every lease then, not a third of a lease later."""
    redis_server = volatile_redis
    d = start_daemon(
        redis_url=redis_server.url, INGEST_LEASE_SECONDS="90", INGEST_HEARTBEAT_TTL="3"
    )
    queue = SyncQueue(d.queue, redis_server.url)
    queue.enqueue(job("forgotten", linger=60))  # quiet after its first lines
    wait_until(lambda: queue.get("forgotten").progress == 100, 20, "its last progress")
    pid = read_runs(run_log)[0]["pid"]
    redis_server.restart()
    wait_until(lambda: not psutil.pid_exists(pid), 10, "the forgotten job's child stopped")
    assert "lease lost" in d.log()
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0


def test_a_redis_user_without_info_keeps_its_heartbeat(
    volatile_redis: PrivateRedis, start_daemon
) -> None:
    """INFO (the Redis server's run id) is in ACL category @dangerous: a Redis user without
    it must not stop the heartbeat, which only loses the new-server check."""
    redis_server = volatile_redis
    acl = ["ACL", "SETUSER", "default", "reset", "on", "nopass", "~*", "&*", "+@all"]
    subprocess.run(
        ["redis-cli", "-p", str(redis_server.port), *acl, "-@dangerous"],
        check=True,
        capture_output=True,
    )
    d = start_daemon(redis_url=redis_server.url, INGEST_HEARTBEAT_TTL="0.6")
    queue = SyncQueue(d.queue, redis_server.url)
    wait_until(lambda: bool(queue.live_workers()), 20, "a first heartbeat")
    first = queue.live_workers()[0]["beat_at"]
    wait_until(
        lambda: any(w["beat_at"] > first + 0.5 for w in queue.live_workers()),
        10,
        "heartbeats after the first",
    )
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0


def test_a_redis_out_of_memory_for_a_while_does_not_end_the_heartbeat(
    volatile_redis: PrivateRedis, start_daemon
) -> None:
    """A heartbeat refused (out of memory under noeviction, MISCONF, READONLY) is skipped,
    not the end of the heartbeat: the daemon is back in the registry once Redis is."""
    redis_server = volatile_redis
    cli = ["redis-cli", "-p", str(redis_server.port), "CONFIG", "SET"]
    d = start_daemon(redis_url=redis_server.url, INGEST_HEARTBEAT_TTL="0.6")
    queue = SyncQueue(d.queue, redis_server.url)
    wait_until(lambda: bool(queue.live_workers()), 20, "a first heartbeat")
    subprocess.run([*cli, "maxmemory-policy", "noeviction"], check=True, capture_output=True)
    subprocess.run([*cli, "maxmemory", "1"], check=True, capture_output=True)
    wait_until(lambda: "heartbeat refused" in d.log(), 10, "a refused heartbeat")
    subprocess.run([*cli, "maxmemory", "0"], check=True, capture_output=True)
    restored = time.time()
    wait_until(
        lambda: any(w["beat_at"] > restored for w in queue.live_workers()),
        10,
        "a heartbeat after Redis has memory again",
    )
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0


def test_failed_attempt_keeps_its_last_progress(start_daemon, q) -> None:
    q.enqueue(job("half", exit=1, max_attempts=1))
    start_daemon()
    wait_until(lambda: q.get("half").state is JobState.FAILED, 30, "half failed")
    rec = q.get("half")
    assert rec.progress == 100  # the child reached 100 before exiting 1
    assert rec.progress_message == "step 10"


# Reads its job; a job whose metadata says "slow" says half-way, then takes 3 s.
QUICK_OR_SLOW = (
    '/bin/sh -c \'read -r job; echo "PROGRESS: 50 half"; case "$job" in *slow*) sleep 3 ;; esac\''
)


def test_only_a_job_that_runs_a_while_writes_its_progress(start_daemon, q, raw_redis) -> None:
    """A job that ends within its first moments shows its outcome and no progress (no write
    to Redis, the events stream or the status table); a longer one's progress is written
    while it runs. (A failed one still records how far it got: the test above.)"""
    start_daemon(INGEST_WORKER_COMMAND=QUICK_OR_SLOW)
    quick = [f"quick-{i}" for i in range(10)]
    q.enqueue_many([job(i) for i in quick])
    q.enqueue(job("slow", slow=True))
    for job_id in [*quick, "slow"]:
        wait_until(lambda j=job_id: q.get(j).state is JobState.COMPLETED, 60, f"{job_id} done")
    events = [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in raw_redis.xrange(f"ingest:{{{q.queue}}}:events")
    ]
    kinds = {job_id: [e["type"] for e in events if e["job"] == job_id] for job_id in quick}
    # Judged by the job's own run (claim to completion, Redis's clock): one that took
    # less than the first write's delay cannot have written its progress.
    short = [
        job_id
        for job_id in quick
        if (rec := q.get(job_id)).finished_at - rec.started_at < FIRST_PROGRESS_AFTER_S - 0.01
    ]
    assert short, "no quick job ran shorter than the delay: the machine is starved"
    assert all("progress" not in kinds[j] for j in short), kinds
    assert {q.get(i).progress for i in quick} == {100}  # completion records 100
    slow = [e["type"] for e in events if e["job"] == "slow"]
    assert "progress" in slow and slow.index("progress") < slow.index("completed"), slow


def test_the_daemons_max_attempts_governs_jobs_that_name_none(start_daemon, q, run_log) -> None:
    """The producer (here with its default of 3) stores no limit of its own: a daemon set to
    1 attempt fails the job after one run; a job that names its limit keeps it."""
    q.enqueue(job("no-limit", exit=1))
    q.enqueue(job("own-limit", exit=1, max_attempts=2))
    start_daemon(INGEST_MAX_ATTEMPTS="1")
    for job_id in ("no-limit", "own-limit"):
        wait_until(lambda j=job_id: q.get(j).state is JobState.FAILED, 30, f"{job_id} failed")
    assert (q.get("no-limit").attempt, q.get("no-limit").max_attempts) == (1, 1)
    assert (q.get("own-limit").attempt, q.get("own-limit").max_attempts) == (2, 2)
    runs = [r["job_id"] for r in read_runs(run_log)]
    assert runs.count("no-limit") == 1 and runs.count("own-limit") == 2


def test_json_logs_one_event_per_line_with_job_and_attempt(start_daemon, q) -> None:
    import json

    q.enqueue({**job("logged"), "metadata": {"trial_token": "tok-do-not-log-42"}})
    d = start_daemon(INGEST_LOG_FORMAT="json")
    wait_until(lambda: q.get("logged").state is JobState.COMPLETED, 30, "logged completed")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    job_lines = [entry for entry in lines if entry.get("job_id") == "logged"]
    assert {entry["attempt"] for entry in job_lines} == {1}
    assert any(entry["msg"].startswith("started") for entry in job_lines)
    assert any(entry.get("outcome") == "completed" for entry in job_lines)
    assert "tok-do-not-log-42" not in d.log()


def test_no_slot_hangs_after_its_child_ends(start_daemon, q) -> None:
    """Regression: a helper task that swallowed its cancel used to hang a slot forever, with
    the child gone and the job left active at 100%. Many short rounds shake it out."""
    start_daemon()
    for rnd in range(12):
        ids = [f"round{rnd}-{i}" for i in range(8)]
        q.enqueue_many([job(i) for i in ids])
        wait_until(
            lambda ids=ids: all(q.get(i).state is JobState.COMPLETED for i in ids),
            20,
            f"round {rnd} completed",
        )


def test_daemon_kills_a_descendant_that_escaped_its_job(start_daemon, q, run_log: Path) -> None:
    """The child leaves a setsid'd, daemonized grandchild and exits at once: no tree sample
    sees it, but the daemon is a child subreaper, adopts it, and its sweep kills it."""
    d = start_daemon()
    q.enqueue(job("escaper", escape=True))
    wait_until(lambda: _states(q, ["escaper"])["escaper"] == JobState.COMPLETED.value, 30, "done")
    escapee = next(r["escapee"] for r in read_runs(run_log) if r["job_id"] == "escaper")
    wait_until(lambda: not _running(escapee), 10, "escaped grandchild killed")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert "an orphan of job escaper" in d.log()


def test_a_descendant_in_its_own_session_dies_with_a_killed_daemon(
    start_daemon, q, run_log: Path
) -> None:
    """The job's child started a process in a session of its own (a headless browser, a
    library that daemonizes) and still runs when the daemon is killed with SIGKILL: the
    fork server, told by the kernel, ends the whole tree, not only the jobs' sessions."""
    d = start_daemon()
    q.enqueue(job("tree", escape=True, sleep=30))
    wait_until(lambda: read_runs(run_log), 20, "child started")
    run = read_runs(run_log)[0]
    assert _running(run["escapee"]) and _running(run["pid"])
    d.signal(signal.SIGKILL)
    d.wait_exit(10)
    wait_until(lambda: not _running(run["pid"]), 10, "the job's child gone")
    wait_until(lambda: not _running(run["escapee"]), 10, "its own-session descendant gone")


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


BUSY_FOR_3_S = (
    "local s = tonumber(redis.call('TIME')[1]) "
    "while tonumber(redis.call('TIME')[1]) < s + 3 do end return 1"
)


def test_a_redis_busy_with_a_script_at_start_is_waited_for(
    start_daemon: Any, private_redis: PrivateRedis
) -> None:
    """BUSY (like MASTERDOWN or CLUSTERDOWN) is a state the server leaves: the daemon waits
    it out, where a wrong password or a missing database stops it (test_settings)."""
    import threading

    admin = redis.Redis.from_url(private_redis.url)
    admin.config_set("lua-time-limit", 100)  # BUSY to others after 0.1 s of a script
    busy = threading.Thread(
        target=lambda: redis.Redis.from_url(private_redis.url).eval(BUSY_FOR_3_S, 0)
    )
    busy.start()

    def says_busy() -> bool:
        try:
            redis.Redis.from_url(private_redis.url, socket_timeout=1).ping()
        except redis.ResponseError as exc:
            return "BUSY" in str(exc)
        return False

    try:
        wait_until(says_busy, 5, "Redis answering BUSY")
        d = start_daemon(redis_url=private_redis.url)
        d.wait_ready(timeout=30)
        assert "Redis not ready (BUSY" in d.log() or not busy.is_alive()
        assert "refuses" not in d.log()
    finally:
        busy.join(10)
        admin.close()
