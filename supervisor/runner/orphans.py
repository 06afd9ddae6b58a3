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
as adopted, including one the daemon inherited at start (`sh -c 'cron & exec daemon'`
would hand it cron): start the daemon directly, as the systemd and supervisord configs
do. `kill_unattributed` says whether the process may assume that: the daemon starts no
other children, so it may; a program that merely uses the runner next to children of its
own may not, and then only attributed orphans are killed, and only zombies of processes
known to be jobs' are reaped.

Sweeps run periodically (the daemon: every second), at a run's end when that is cheap
(the kernel lists our children) or likely to find something (the job's pipes are still
held after its exit), and at shutdown. The end-of-run sweep also says whether the run
left nothing behind, which is what lets its working directory be reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import logging
import os
import signal
from dataclasses import dataclass

import psutil

from supervisor.runner.prctl import PR_SET_CHILD_SUBREAPER, PRCTL

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class _Run:
    job: tuple[str, str]  # (INGEST_JOB_ID, INGEST_ATTEMPT) as its processes carry them
    root_pid: int


@dataclass(frozen=True)
class AfterRun:
    killed: int  # orphans of the run killed now
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
        # Unattributable orphans: (pid, start ticks) -> runs going on when first seen.
        self._waiting_on: dict[tuple[int, int], frozenset[int]] = {}
        # Processes known to be jobs' (attributed, or killed here): pid -> start ticks.
        # Their zombies are ours to reap even where other children are not.
        self._ours: dict[int, int] = {}

    def become_subreaper(self, *, kill_unattributed: bool) -> bool:
        """Adopt orphaned descendants from now on (Linux); False where it is not possible."""
        if not self.enabled:
            if PRCTL is None or PRCTL(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                err = ctypes.get_errno() if PRCTL is not None else 0
                log.warning("cannot become a child subreaper: %s", os.strerror(err))
                return False
            self.enabled = True
            # Without /proc/.../children, listing our children reads every process on the
            # machine (~1.5 ms): too dear for every run's end.
            self._cheap = _children_file() is not None
        self.kill_unattributed = kill_unattributed
        return True

    def stop_being_subreaper(self) -> None:
        """Orphans go to init again (a program lending the role for a while: tests)."""
        if self.enabled and PRCTL is not None:
            PRCTL(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
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
        return self._sweep(ending=token)[0]

    # ---- sweeping -----------------------------------------------------------------------

    async def run_periodically(self, interval_s: float) -> None:
        """Sweep every interval until cancelled (the daemon's upkeep)."""
        while True:
            self.sweep()
            await asyncio.sleep(interval_s)

    def sweep(self) -> int:
        """Reap adopted zombies; kill adopted orphans no running run can own. How many."""
        return self._sweep(ending=None)[1] if self.enabled else 0

    def _sweep(self, ending: int | None) -> tuple[AfterRun, int]:
        """(what the ending run left, how many orphans were killed in all)"""
        running = {t: run for t, run in self._runs.items() if t != ending}
        running_jobs = {run.job for run in running.values()}
        ending_job = self._runs[ending].job if ending in self._runs else None
        charged = 0  # killed orphans of the ending run
        killed = 0
        # Only a look that saw every candidate alive, erred on none and reaped none can
        # say the run left nothing: a reaped orphan's children are reparented to us
        # after the list was read.
        certain = True
        seen: set[tuple[int, int]] = set()
        children = _direct_children()
        for pid in children - self.owned:
            try:
                proc = psutil.Process(pid)
                started = _start_ticks(pid)
                if proc.status() == psutil.STATUS_ZOMBIE:
                    if self.kill_unattributed or self._ours.get(pid) == started:
                        self._reap(pid)
                        certain = False
                    continue
                owner = _run_of(proc)
            except (psutil.Error, OSError):
                certain = False
                continue
            if owner is not None:
                self._ours[pid] = started  # a job's: its zombie is ours to reap
                if owner == ending_job:
                    certain = False
                if owner in running_jobs:
                    continue
            elif self.kill_unattributed:
                certain = False
                key = (pid, started)
                seen.add(key)
                waiting_on = self._waiting_on.setdefault(key, frozenset(self._runs))
                if waiting_on & running.keys():
                    continue
            else:
                certain = False  # not ours to kill, and it might be the run's
                continue
            self._kill_with_descendants(proc, started)
            killed += 1
            if owner is not None and owner == ending_job:
                charged += 1
            log.warning("killed pid %d, an orphan of job %s", pid, owner[0] if owner else "?")
        # New orphans while we looked can only descend from orphans in the first list
        # (the run's root is gone): with none there, a second listing is not needed.
        if children - self.owned and _direct_children() - children - self.owned:
            certain = False
        self._waiting_on = {k: v for k, v in self._waiting_on.items() if k in seen}
        if len(self._ours) > 1024:  # forget processes that are gone for good
            self._ours = {p: t for p, t in self._ours.items() if os.path.exists(f"/proc/{p}")}
        return AfterRun(charged, left_nothing=certain and killed == 0), killed

    def _kill_with_descendants(self, proc: psutil.Process, started: int) -> None:
        """SIGKILL the orphan and its descendants; remember them all, since each becomes
        our child (and a zombie to reap) once its parent is gone."""
        with contextlib.suppress(psutil.Error):
            for descendant in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error, OSError):
                    ticks = _start_ticks(descendant.pid)
                    descendant.send_signal(signal.SIGKILL)
                    self._ours[descendant.pid] = ticks
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
        self._ours[proc.pid] = started

    def _reap(self, pid: int) -> None:
        self._ours.pop(pid, None)
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


def _start_ticks(pid: int) -> int:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat):
    with the pid, its identity, unmoved by wall-clock steps (psutil's create_time is)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


ORPHANS = OrphanSweeper()
