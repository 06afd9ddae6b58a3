"""A supervisor that is a child subreaper adopts jobs' escaped descendants and kills them,
even those no tree sample ever saw (their parent exited at once).

Each test runs a real supervisor process (children/mini_supervisor.py): the subreaper
flag is process-wide and must not be set on the test runner itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from tests.runner.conftest import CHILDREN, child_cmd, wait_gone


class Mini:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def line(self, prefix: str) -> str:
        """The next stdout line starting with prefix (blocks; the test's timeout bounds it)."""
        assert self.proc.stdout is not None
        while True:
            raw = self.proc.stdout.readline()
            assert raw, f"supervisor ended early: {self.proc.stderr and self.proc.stderr.read()!r}"
            text = raw.decode().strip()
            if text.startswith(prefix):
                return text


StartMini = Callable[..., Mini]


@pytest.fixture
def mini() -> Iterator[StartMini]:
    started: list[subprocess.Popen[bytes]] = []

    def start(
        *child: str,
        subreaper: bool = True,
        cheap: bool = True,
        pidfd: bool = True,
        alongside: tuple[str, ...] = (),
    ) -> Mini:
        env = {**os.environ, "MINI_HOLD": "1", "MINI_SUBREAPER": "1" if subreaper else "0"}
        if not cheap:
            env["MINI_NO_CHEAP"] = "1"
        if not pidfd:
            env["MINI_NO_PIDFD"] = "1"
        if alongside:
            env["MINI_ALONGSIDE"] = json.dumps(alongside)
        proc = subprocess.Popen(
            [sys.executable, str(CHILDREN / "mini_supervisor.py"), *child],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        started.append(proc)
        return Mini(proc)

    yield start
    for proc in started:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pid_of(line: str) -> int:
    return int(line.split()[-1])


def _kill(pid: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).kill()


def test_escapee_no_sample_saw_is_killed(mini: StartMini) -> None:
    sup = mini(*child_cmd("grandchild_setsid.py", "exit", "0"))
    escapee = _pid_of(sup.line("CHILD escaped"))
    done = sup.line("DONE")
    assert not wait_gone([escapee], timeout=5), "the escaped grandchild survived its job"
    assert int(done.split()[1]) >= 1  # counted as a stray of the job


def test_without_the_subreaper_that_escapee_survives_the_job(mini: StartMini) -> None:
    """The control: the same child really does escape a supervisor that is no subreaper."""
    sup = mini(*child_cmd("grandchild_setsid.py", "exit", "0"), subreaper=False)
    escapee = _pid_of(sup.line("CHILD escaped"))
    try:
        sup.line("DONE")
        assert psutil.Process(escapee).status() != psutil.STATUS_ZOMBIE
    finally:
        _kill(escapee)


def test_daemonized_escapee_is_killed_at_the_end_of_its_run(mini: StartMini) -> None:
    """The kernel lists the supervisor's children cheaply: the run's own end sweeps."""
    sup = mini(*child_cmd("grandchild_setsid.py", "quiet"))
    escapee = _pid_of(sup.line("CHILD escaped"))
    done = sup.line("DONE")
    assert int(done.split()[1]) == 1
    assert not wait_gone([escapee], timeout=5)


def test_daemonized_escapee_is_killed_and_reaped_by_the_periodic_sweep(mini: StartMini) -> None:
    """Without a cheap listing of children, the run's end does not look; the sweep does."""
    sup = mini(*child_cmd("grandchild_setsid.py", "quiet"), cheap=False)
    escapee = _pid_of(sup.line("CHILD escaped"))
    done = sup.line("DONE")  # the job ended without waiting on any pipe
    assert int(done.split()[1]) == 0
    deadline = time.monotonic() + 10
    while psutil.pid_exists(escapee):  # gone entirely: killed, then reaped (no zombie)
        assert time.monotonic() < deadline, psutil.Process(escapee).status()
        time.sleep(0.05)


@pytest.mark.parametrize("environment", ["carried", "scrubbed"])
def test_orphan_of_a_running_job_lives_until_that_job_ends(
    mini: StartMini, environment: str
) -> None:
    """Attributed by INGEST_JOB_ID, or (scrubbed) not at all: spared while its job runs."""
    sup = mini(*child_cmd("orphan_maker.py", "2.0", environment))
    orphan = _pid_of(sup.line("CHILD orphan"))
    assert psutil.Process(orphan).ppid() == sup.proc.pid  # adopted by the supervisor
    # Several periodic sweeps (every 0.2 s) pass while its job still runs.
    watch_until = time.monotonic() + 1.0
    while time.monotonic() < watch_until:
        assert psutil.Process(orphan).status() != psutil.STATUS_ZOMBIE
        time.sleep(0.05)
    sup.line("DONE")
    assert not wait_gone([orphan], timeout=5), "the orphan outlived its job"


def test_unattributable_orphan_waits_for_every_run_it_might_belong_to(mini: StartMini) -> None:
    """A scrubbed orphan appears while two runs go on; its own run ends first. It could be
    the other run's, so it lives until that one ends too, then dies."""
    other = child_cmd("orphan_maker.py", "2.5")  # a run of 2.5 s with an orphan of its own
    sup = mini(*child_cmd("orphan_maker.py", "0.3", "scrubbed"), alongside=other)
    orphan = _pid_of(sup.line("CHILD orphan"))
    sup.line("DONE")  # its run is over; the other still runs
    watch_until = time.monotonic() + 1.0  # several periodic sweeps (every 0.2 s)
    while time.monotonic() < watch_until:
        assert psutil.Process(orphan).status() != psutil.STATUS_ZOMBIE
        time.sleep(0.05)
    sup.line("DONE2")
    assert not wait_gone([orphan], timeout=5), "the orphan outlived every run"


def test_an_orphan_that_takes_another_running_job_s_name_dies_with_its_own(
    mini: StartMini,
) -> None:
    """Its environment is the child's to change: an orphan that execs itself (same pid)
    with the name of another job that still runs is first seen as its own job's, and dies
    when that job ends, not when the job it named does (or never, hopping on from job to
    job on a daemon that is never idle)."""
    other = child_cmd("orphan_maker.py", "8.0")  # job mini-2, running 8 s
    sup = mini(*child_cmd("orphan_maker.py", "2.0", "hop", "1.0"), alongside=other)
    orphan = _pid_of(sup.line("CHILD orphan"))
    deadline = time.monotonic() + 5.0
    while psutil.Process(orphan).environ().get("INGEST_JOB_ID") != "mini-2":
        assert time.monotonic() < deadline, "the orphan never took the other job's name"
        time.sleep(0.05)
    sup.line("DONE")  # its own run is over; mini-2, which it now names, still runs
    assert not wait_gone([orphan], timeout=4), "the orphan lived on under another job's name"
    sup.line("DONE2")


def _gone(pid: int, timeout: float) -> bool:
    """Not in /proc at all (killed and reaped) within `timeout`."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_escapee_whose_main_thread_exited_is_killed(mini: StartMini) -> None:
    """/proc shows a process whose main thread alone has exited as a zombie, while its
    other threads run: it is killed like any escapee, not taken for a zombie to reap."""
    sup = mini(*child_cmd("zombie_leader.py"))
    escapee = _pid_of(sup.line("CHILD escaped"))
    try:
        sup.line("DONE")
        assert _gone(escapee, 10), os.listdir(f"/proc/{escapee}/task")
    finally:
        _kill(escapee)


def test_a_crowd_of_orphans_is_swept_in_one_look_at_the_process_table(mini: StartMini) -> None:
    """A job that leaves 600 orphans: its run's end kills them all at once. Each used to
    cost a scan of every process on the machine, 600 scans of 600 processes holding the
    daemon's event loop for seconds; now the table is read once per sweep."""
    sup = mini(*child_cmd("orphan_crowd.py", "600"))
    sup.line("CHILD left")
    started = time.monotonic()
    done = sup.line("DONE")
    took = time.monotonic() - started
    assert int(done.split()[1]) == 600
    assert took < 3.0, f"the run's end took {took:.1f}s"


@pytest.mark.parametrize("pidfd", [True, False])
def test_an_orphan_and_its_own_child_are_killed_with_or_without_pidfds(
    mini: StartMini, pidfd: bool
) -> None:
    """Descendants of an orphan are killed through a pidfd, or, where there is none (an
    old kernel, a seccomp filter, a Python built without them), by a plain kill after a
    check of their start time."""
    sup = mini(*child_cmd("orphan_maker.py", "0.2", "family"), pidfd=pidfd)
    orphan, baby = (int(p) for p in sup.line("CHILD orphan").split()[-2:])
    done = sup.line("DONE")
    assert int(done.split()[1]) == 1
    assert not wait_gone([orphan, baby], timeout=5)
