"""Orphans of jobs: adopted by the supervisor (a child subreaper), then killed and reaped.

A job's grandchild that calls setsid() leaves the job's process group, and once its parent
exits the kernel reparents it. Without a subreaper it goes to init and the runner only
knows it if a tree sample happened to see it; with PR_SET_CHILD_SUBREAPER on the
supervisor it becomes the supervisor's own child instead, where a sweep finds it.

Which run an adopted orphan belongs to: INGEST_JOB_ID and INGEST_ATTEMPT in its
environment (as of its last exec). It is killed, with its descendants, once that run has
ended. An orphan without them (a zygote child's descendant: forked, never exec'd; or one
started with a scrubbed environment) cannot be told apart: it is killed once every run
that was going on when it was first seen has ended, so a running job's helper is never
cut short and nothing lives for ever.

Every direct child that no spawner registered in `owned` (job roots, the zygote) counts
as adopted. `kill_unattributed` says whether the process may assume that: the daemon
starts no other children, so it may; a program that merely uses the runner next to
children of its own may not, and then only attributed orphans are killed, and only
zombies of orphans killed here are reaped.

Sweeps run periodically (the daemon: every second), at a run's end when that is cheap
(the kernel lists our children) or likely to find something (the job's pipes are still
held after its exit), and at shutdown. The end-of-run sweep also says whether the run
left nothing behind, which is what lets its working directory be reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import itertools
import logging
import os
import signal
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class _Run:
    job: tuple[str, str]  # (INGEST_JOB_ID, INGEST_ATTEMPT) as its processes carry them
    root_pid: int


@dataclass(frozen=True)
class AfterRun:
    killed: int  # orphans of the run (or unattributable ones) killed now
    left_nothing: bool  # a full look found no orphan that could be the run's


class OrphanSweeper:
    def __init__(self) -> None:
        self.enabled = False
        self.kill_unattributed = False
        # Direct children that some spawner waits for itself: never reaped or killed here.
        self.owned: set[int] = set()
        self._cheap = False
        self._tokens = itertools.count(1)
        self._runs: dict[int, _Run] = {}
        # Unattributable orphans: (pid, start time) -> runs going on when first seen.
        self._waiting_on: dict[tuple[int, float], frozenset[int]] = {}
        self._killed: dict[int, float] = {}  # pid -> start time, to reap them later

    def become_subreaper(self, *, kill_unattributed: bool) -> bool:
        """Adopt orphaned descendants from now on (Linux); False where it is not possible."""
        if not self.enabled:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
            except (OSError, AttributeError) as exc:
                log.warning("cannot become a child subreaper: %s", exc)
                return False
            self.enabled = True
            # Without /proc/.../children, listing our children reads every process on the
            # machine (~1.5 ms): too dear for every run's end.
            self._cheap = _children_file() is not None
        self.kill_unattributed = kill_unattributed
        return True

    def stop_being_subreaper(self) -> None:
        """Orphans go to init again (a program lending the role for a while: tests)."""
        if self.enabled:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
            self.enabled = False

    # ---- runs -------------------------------------------------------------------------

    def run_started(self, job_id: str, attempt: int, root_pid: int) -> int:
        token = next(self._tokens)
        self._runs[token] = _Run((job_id, str(attempt)), root_pid)
        return token

    def run_ended(self, token: int) -> None:
        self._runs.pop(token, None)

    def sweep_after_run(self, token: int, *, pipes_held: bool) -> AfterRun:
        """The sweep at a run's end (call before `run_ended`): done when cheap or when the
        pipes are still held; else the periodic sweep finds the run's orphans later."""
        if not self.enabled or not (pipes_held or self._cheap):
            return AfterRun(0, left_nothing=False)
        return self._sweep(ending=token)

    # ---- sweeping -----------------------------------------------------------------------

    async def run_periodically(self, interval_s: float) -> None:
        """Sweep every interval until cancelled (the daemon's upkeep)."""
        while True:
            self.sweep()
            await asyncio.sleep(interval_s)

    def sweep(self) -> int:
        """Reap adopted zombies; kill adopted orphans no running run can own. How many."""
        return self._sweep(ending=None).killed if self.enabled else 0

    def _sweep(self, ending: int | None) -> AfterRun:
        running = {t: run for t, run in self._runs.items() if t != ending}
        running_jobs = {run.job for run in running.values()}
        ending_job = self._runs[ending].job if ending in self._runs else None
        killed = 0
        left_nothing = True
        seen: set[tuple[int, float]] = set()
        children = _direct_children()
        self._killed = {p: t for p, t in self._killed.items() if p in children}
        for pid in children - self.owned:
            try:
                proc = psutil.Process(pid)
                started = proc.create_time()
                if proc.status() == psutil.STATUS_ZOMBIE:
                    if self.kill_unattributed or self._killed.get(pid) == started:
                        self._reap(pid)
                    continue
                owner = _run_of(proc)
            except (psutil.Error, OSError):
                continue
            if owner is not None:
                if owner == ending_job:
                    left_nothing = False
                if owner in running_jobs:
                    continue
            elif self.kill_unattributed:
                left_nothing = False
                key = (pid, started)
                seen.add(key)
                waiting_on = self._waiting_on.setdefault(key, frozenset(self._runs))
                if waiting_on & running.keys():
                    continue
            else:
                left_nothing = False  # not ours to kill, and it might be the run's
                continue
            _kill_with_descendants(proc)
            self._killed[pid] = started
            killed += 1
            log.warning("killed pid %d, an orphan of job %s", pid, owner[0] if owner else "?")
        self._waiting_on = {k: v for k, v in self._waiting_on.items() if k in seen}
        return AfterRun(killed, left_nothing=left_nothing and killed == 0)

    def _reap(self, pid: int) -> None:
        self._killed.pop(pid, None)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


_children_path: dict[int, str | None] = {}  # by pid: a forked copy has its own


def _children_file() -> str | None:
    """The children list of this process's main thread, or None on kernels without it.

    Orphans are reparented to the subreaper's first live thread, its main thread: that
    one file lists every adopted orphan (children our other threads started are owned).
    """
    pid = os.getpid()
    if pid not in _children_path:
        path = f"/proc/self/task/{pid}/children"
        _children_path[pid] = path if os.path.exists(path) else None
    return _children_path[pid]


def _direct_children() -> set[int]:
    path = _children_file()
    if path is None:
        return {p.pid for p in psutil.Process().children()}  # reads every process: ms
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return {int(p) for p in b"".join(chunks).split()}


def _run_of(proc: psutil.Process) -> tuple[str, str] | None:
    try:
        env = proc.environ()
    except psutil.AccessDenied:
        return None
    job, attempt = env.get("INGEST_JOB_ID"), env.get("INGEST_ATTEMPT")
    return (job, attempt) if job is not None and attempt is not None else None


def _kill_with_descendants(proc: psutil.Process) -> None:
    with contextlib.suppress(psutil.Error):
        for descendant in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                descendant.send_signal(signal.SIGKILL)
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGKILL)


ORPHANS = OrphanSweeper()
