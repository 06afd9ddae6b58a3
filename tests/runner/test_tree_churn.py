"""ProcessTree under churn: the tracked set stays bounded, dead and reused pids are dropped or
replaced, a failed /proc read never stops the sampling. Real processes, no mocks of psutil."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from supervisor.runner.containment import PROCESS_TABLE, ProcessTree
from supervisor.runner.proctable import start_ticks
from supervisor.runner.sampling import start_sampling
from supervisor.runner.spawn import ExitStatus, SpawnedChild
from tests.waiting import poll, wait_until

# Keeps up to 100 children alive, each living ~20 ms, until a line arrives on stdin; then
# reaps them all, says "quiet" and waits for EOF.
CHURN = """
import os, select, sys, time
live = set()
while not select.select([sys.stdin], [], [], 0)[0]:
    while len(live) < 100:
        pid = os.fork()
        if pid == 0:
            time.sleep(0.02)
            os._exit(0)
        live.add(pid)
    live.discard(os.waitpid(-1, 0)[0])
for pid in live:
    os.waitpid(pid, 0)
print("quiet", flush=True)
sys.stdin.read()
"""

# A setsid grandchild first (it leaves the group), then 30 children in the group; prints
# the grandchild's pid once all are started, then waits for EOF.
ESCAPE_THEN_CROWD = """
import os, sys, time
def sleeper():
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
ready_r, ready_w = os.pipe()
escaped = os.fork()
if escaped == 0:
    os.setsid()
    os.write(ready_w, b"x")
    time.sleep(600)
    os._exit(0)
os.read(ready_r, 1)  # out of the group before any sample
time.sleep(0.05)  # and older than the crowd by more than a start-time tick (10 ms)
for _ in range(30):
    sleeper()
print(escaped, flush=True)
sys.stdin.read()
"""

# One child at a time, on command: "fork" starts one (prints its pid), "kill" kills and
# reaps it (prints "reaped").
FORK_ON_COMMAND = """
import os, signal, sys, time
child = 0
for line in sys.stdin:
    if line.strip() == "fork":
        child = os.fork()
        if child == 0:
            time.sleep(600)
            os._exit(0)
        print(child, flush=True)
    else:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        print("reaped", flush=True)
"""


@contextlib.contextmanager
def root(script: str) -> Iterator[subprocess.Popen[str]]:
    """The script as a job's child would run: leading its own session and group; its group
    is killed at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def command(proc: subprocess.Popen[str], line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def test_churned_processes_are_forgotten_and_a_sample_stays_cheap() -> None:
    with root(CHURN) as proc:
        tree = ProcessTree(proc.pid)
        seen: set[int] = set()
        slowest = 0.0

        def sampled_enough() -> bool:
            nonlocal slowest
            started = time.monotonic()
            tree.sample()
            slowest = max(slowest, time.monotonic() - started)
            seen.update(tree.known)
            # At most 100 alive at once: dead ones must not pile up.
            assert len(tree.known) <= 200, len(tree.known)
            return len(seen) >= 1500

        wait_until(sampled_enough, 60.0, "1500 distinct descendants sampled", interval=0.02)
        assert slowest < 1.0, slowest
        assert command(proc, "stop") == "quiet"
        tree.sample()
        assert tree.known == {}
        assert tree.survivors() == []
        assert tree.peak_rss_bytes > 0 and tree.cpu_s > 0


def test_tracked_set_is_capped_keeping_escaped_then_newest() -> None:
    with root(ESCAPE_THEN_CROWD) as proc:
        assert proc.stdout is not None
        escaped = int(proc.stdout.readline())
        try:
            tree = ProcessTree(proc.pid, max_tracked=10)
            tree.sample()
            assert len(tree.known) == 10
            assert escaped in tree.known
            crowd = [p for p in psutil.Process(proc.pid).children() if p.pid != escaped]
            kept = [p.create_time() for p in crowd if p.pid in tree.known]
            left = [p.create_time() for p in crowd if p.pid not in tree.known]
            assert len(kept) == 9 and min(kept) >= max(left)  # the newest of the crowd
            tree.signal_all(signal.SIGKILL)
            wait_until(lambda: tree.survivors() == [], 5.0, "the escaped grandchild killed")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(escaped, signal.SIGKILL)


def _set_last_pid(pid: int) -> bool:
    try:
        with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
            fh.write(str(pid))
    except OSError:
        return False
    return True


def test_a_reused_pid_is_tracked_as_the_new_descendant() -> None:
    if not _set_last_pid(os.getpid()):  # harmless: the next pid is searched from there
        pytest.skip("cannot choose the next pid (needs CAP_SYS_ADMIN)")
    with root(FORK_ON_COMMAND) as proc:
        tree = ProcessTree(proc.pid)
        first = 0

        def reused() -> bool:
            """One try: a descendant sampled, then reaped, then another on its pid. Other
            processes on the machine may take the pid first: then the next try."""
            nonlocal tree, first
            tree = ProcessTree(proc.pid)
            first = int(command(proc, "fork"))
            first_start = psutil.Process(first).create_time()
            tree.sample()
            assert first in tree.known
            assert command(proc, "kill") == "reaped"
            _set_last_pid(first - 1)
            again = int(command(proc, "fork"))
            if again == first and psutil.Process(again).create_time() != first_start:
                return True
            assert command(proc, "kill") == "reaped"
            return False

        wait_until(reused, 30.0, "a descendant on a reused pid", interval=0.01)
        tree.sample()
        assert tree.survivors() == [first]
        assert tree.known[first] == start_ticks(first)


def test_sample_drops_a_descendant_gone_and_reaped() -> None:
    with root(FORK_ON_COMMAND) as proc:
        tree = ProcessTree(proc.pid)
        pid = int(command(proc, "fork"))
        tree.sample()
        assert pid in tree.known
        assert command(proc, "kill") == "reaped"
        tree.sample()  # the stale entry's /proc files are gone: no error escapes
        assert pid not in tree.known
        assert tree.samples == 2


class _FailingOnce(ProcessTree):
    """A tree whose first sample fails as psutil can when a pid vanishes between reads."""

    def sample(self, *, fresh: bool = False) -> None:
        super().sample(fresh=fresh)
        if self.samples == 1:
            raise FileNotFoundError("/proc/1234/statm")


async def test_sampling_goes_on_after_a_sample_raises() -> None:
    with root(FORK_ON_COMMAND) as proc:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)  # the raise is expected
        exited: asyncio.Future[ExitStatus] = loop.create_future()
        child = SpawnedChild(proc.pid, -1, -1, -1, exited)
        tree = _FailingOnce(proc.pid)
        stop = start_sampling(tree, child.exited, 0.01)
        try:
            await poll(lambda: tree.samples >= 3, 10.0, "samples after the failed one")
        finally:
            stop()


# Forks argv[1] children that wait for the parent's stdin to close; prints "up" once all
# are forked.
CROWD = """
import os, sys
n = int(sys.argv[1])
for _ in range(n):
    if os.fork() == 0:
        sys.stdin.read()
        os._exit(0)
print("up", flush=True)
sys.stdin.read()
for _ in range(n):
    os.wait()
"""


def _close_and_wait(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        proc.wait(timeout=30)


def test_a_sample_costs_what_its_own_tree_holds_not_the_whole_machine() -> None:
    """Each running job's tree is sampled twice a second: one job's thousand processes
    must not make every other job's samples read them all."""
    crowd = subprocess.Popen(
        [sys.executable, "-S", "-c", CROWD, "1000"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    small = subprocess.Popen(
        [sys.executable, "-S", "-c", "import os, sys; os.fork(); sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        assert crowd.stdout is not None and crowd.stdout.readline() == b"up\n"
        wait_until(lambda: len(psutil.Process(small.pid).children()) == 1, 10, "its fork")
        tree = ProcessTree(small.pid)
        reads = PROCESS_TABLE.reads
        before = time.process_time()
        for _ in range(30):
            tree.sample()
        spent = time.process_time() - before
        assert len(tree.known) == 1
        assert PROCESS_TABLE.reads == reads  # its own children lists were enough
        # Reading the whole table costs tens of milliseconds per sample here.
        assert spent < 0.1, f"30 samples of a 2-process tree took {spent:.3f} s of CPU"
    finally:
        _close_and_wait(crowd, small)


def test_huge_trees_share_one_read_of_the_process_table() -> None:
    """A tree too large to walk (or of too many threads) is found in the whole process
    table, read once for every such tree sampled at about the same time."""
    roots = [
        subprocess.Popen(
            [sys.executable, "-S", "-c", CROWD, "40"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for _ in range(4)
    ]
    try:
        for root in roots:
            assert root.stdout is not None and root.stdout.readline() == b"up\n"
        trees = [ProcessTree(root.pid, max_tracked=100) for root in roots]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("supervisor.runner.containment.MAX_WALK_READS", 20)
            reads = PROCESS_TABLE.reads
            for tree in trees:
                tree.sample()
        assert PROCESS_TABLE.reads - reads == 1
        assert all(len(tree.known) == 40 for tree in trees)
    finally:
        _close_and_wait(*roots)


# A crowd of argv[1] children in the job's group, then one child whose own child leaves
# the group with setsid(); prints that grandchild's pid, then waits for EOF.
CROWD_THEN_ESCAPE = """
import os, sys
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        sys.stdin.read()
        os._exit(0)
r, w = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        os.write(w, str(os.getpid()).encode())
        sys.stdin.read()
        os._exit(0)
    sys.stdin.read()
    os._exit(0)
print(os.read(r, 32).decode(), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize(
    ("crowd", "walk_reads"),
    [(25, 1024), (25, 5), (300, 1024)],
    ids=["walked", "from-the-table", "more-than-a-sample-reads"],
)
def test_a_process_that_left_the_group_is_tracked_however_large_the_tree(
    crowd: int, walk_reads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group signal misses it, so of a tree larger than what is tracked, such a
    process is kept first, whichever way the tree was found, and however many processes
    came before it (more than a sample reads the stat of)."""
    monkeypatch.setattr("supervisor.runner.containment.MAX_WALK_READS", walk_reads)
    root = subprocess.Popen(
        [sys.executable, "-S", "-c", CROWD_THEN_ESCAPE, str(crowd)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert root.stdout is not None
        escaped = int(root.stdout.readline())
        tree = ProcessTree(root.pid, max_tracked=10)
        wait_until(
            lambda: (tree.sample(), escaped in tree.known)[1], 10, "the escaped process tracked"
        )
        assert len(tree.known) == 10
    finally:
        _close_and_wait(root)
