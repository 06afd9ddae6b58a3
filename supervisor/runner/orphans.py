"""Orphans of jobs: adopted by the supervisor (a child subreaper), then killed and reaped.

A job's grandchild that calls setsid() leaves the job's process group, and once its parent
exits the kernel reparents it. Without a subreaper it goes to init and the runner only
knows it if a tree sample happened to see it; with PR_SET_CHILD_SUBREAPER on the
supervisor it becomes the supervisor's own child instead, where `sweep()` finds it.

The sweep runs periodically (the daemon: every second) and at a job's end when that is
cheap or its pipes are still held. Which job an adopted orphan belongs to: its
environment's INGEST_JOB_ID (as of its last exec), else its session. One whose job is
still running is left alone until that job ends; any other is killed with its
descendants. Zombies among adopted orphans are reaped.

Only the process that owns the subreaper flag may sweep: every direct child that is not
registered in `owned` (job roots, the zygote) counts as adopted, so enabling this in a
program that starts other children of its own would kill them. The daemon enables it;
library users of the runner do not get it by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
from collections import Counter
from typing import TypeVar

import psutil

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
T = TypeVar("T")


class OrphanSweeper:
    def __init__(self) -> None:
        self.enabled = False
        self._cheap = False
        # Direct children that some spawner waits for itself: never reaped or killed here.
        self.owned: set[int] = set()
        self._running_jobs: Counter[str] = Counter()
        self._running_sessions: Counter[int] = Counter()

    def become_subreaper(self) -> bool:
        """Adopt orphaned descendants from now on (Linux); False where it is not possible."""
        if self.enabled:
            return True
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        except (OSError, AttributeError) as exc:
            log.warning("cannot become a child subreaper: %s", exc)
            return False
        self.enabled = True
        # Without /proc/.../children, listing our children reads every process on the
        # machine (~1.5 ms): too dear for every job's end.
        self._cheap = _children_files() is not None
        return True

    def job_started(self, job_id: str, root_pid: int) -> None:
        self._running_jobs[job_id] += 1
        self._running_sessions[root_pid] += 1  # the root leads its own session

    def job_ended(self, job_id: str, root_pid: int) -> None:
        _drop(self._running_jobs, job_id)
        _drop(self._running_sessions, root_pid)

    def sweep(self, ending_job: str | None = None, ending_session: int | None = None) -> int:
        """Reap adopted zombies; kill adopted orphans whose job is not running, or is the
        one ending (`ending_job`, whose root led `ending_session`). Returns how many were
        killed."""
        if not self.enabled:
            return 0
        killed = 0
        for pid in _direct_children() - self.owned:
            try:
                proc = psutil.Process(pid)
                if proc.status() == psutil.STATUS_ZOMBIE:
                    self._reap(proc.pid)
                    continue
                owner = _job_of(proc)
                session = os.getsid(proc.pid)
            except (psutil.Error, OSError):
                continue
            if owner is not None and owner != ending_job and owner in self._running_jobs:
                continue
            if owner is None and session != ending_session and session in self._running_sessions:
                continue
            _kill_with_descendants(proc)
            killed += 1
            log.warning("killed pid %d, an orphan of job %s", proc.pid, owner or "(unknown)")
        return killed

    def sweep_after_job(self, job_id: str, root_pid: int, *, pipes_held: bool) -> int:
        """The sweep at a job's end, when it is cheap (the kernel lists our children) or
        likely to find something (the job's pipes are still held open after its exit).
        Otherwise the periodic sweep finds the job's orphans within its interval."""
        if not self.enabled or not (pipes_held or self._cheap):
            return 0
        return self.sweep(job_id, root_pid)

    async def run_periodically(self, interval_s: float) -> None:
        """Sweep every interval until cancelled (the daemon's upkeep)."""
        while True:
            self.sweep()
            await asyncio.sleep(interval_s)

    def _reap(self, pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _drop(counter: Counter[T], key: T) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]


def _children_files() -> list[str] | None:
    """/proc/self/task/*/children paths, or None on kernels built without them."""
    try:
        paths = [f"/proc/self/task/{t}/children" for t in os.listdir("/proc/self/task")]
    except OSError:
        return None
    return paths if paths and os.path.exists(paths[0]) else None


def _direct_children() -> set[int]:
    files = _children_files()
    if files is None:
        return {p.pid for p in psutil.Process().children()}  # reads every process: ms
    pids: set[int] = set()
    for path in files:
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:  # thread ended
            pids.update(int(p) for p in fh.read().split())
    return pids


def _job_of(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get("INGEST_JOB_ID")
    except psutil.AccessDenied:
        return None


def _kill_with_descendants(proc: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        for descendant in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                descendant.send_signal(signal.SIGKILL)
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGKILL)


ORPHANS = OrphanSweeper()
