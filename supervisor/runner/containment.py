"""Containment of a job's processes: every descendant dies when the job ends.

Three layers, described together in docs/child-protocol.md:

- Process group and tree sampling (`ProcessTree`): a child leads its own session and
  process group, which is signalled as a whole; descendants seen by a periodic sample are
  remembered while they live (up to `MAX_TRACKED`), so one that left the group (setsid)
  is still signalled when the job stops.
- Subreaper sweep (`OrphanSweeper`, the daemon's `ORPHANS`): with PR_SET_CHILD_SUBREAPER
  the daemon adopts a job's escaped descendants once their parent exits, even those no
  sample saw; sweeps kill them when their run has ended.
- Parent death: the fork server learns of the daemon's death by SIGTERM and kills every
  job's session before it exits (`forkserver_main`). A child forked from a spare also
  carries PR_SET_PDEATHSIG(SIGKILL) against the server; a command the server spawned is
  killed by the daemon if the server dies (`forkserver`).

Which run an adopted orphan belongs to: INGEST_JOB_ID and INGEST_ATTEMPT in its
environment when a sweep first sees it (as of its last exec then; a later exec that names
another job does not count). It is killed, with its descendants, once that run has ended.
An orphan without them (a built-in worker's descendant: forked, never exec'd; or one
started with a scrubbed environment) cannot be told apart: it is killed once every run
that was going on when it was first seen has ended, so a running job's helper is never
cut short. One that re-forks itself (each copy a new process, first seen while other runs
go on) escapes this on a busy daemon: see docs/child-protocol.md.

Every direct child that was not registered in `owned` (the fork server) counts as
adopted, including one the daemon inherited at start (`sh -c 'cron & exec daemon'` would
hand it cron): start the daemon directly, as the systemd and supervisord configs do.
`kill_unattributed` says whether the process may assume that: the daemon starts no other
children, so it may; a program that merely uses the runner next to children of its own
may not, and then only attributed orphans are killed, and only zombies of processes known
to be jobs' are reaped.
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
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from supervisor.runner.proctable import (
    SharedTable,
    Stat,
    children_by_parent,
    children_file,
    descendants_in,
    direct_children,
    kill_if_same,
    read_stat,
    walk_descendants,
)

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


def _load_prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn: Callable[..., int] = libc.prctl
        return fn
    except (OSError, AttributeError):
        return None


PRCTL = _load_prctl()


# Processes a tree keeps track of at most. Beyond it the group signal, and the session kill
# and subreaper sweep, reach the rest.
MAX_TRACKED = 2048
# A tree whose walk would read more children lists than this (threads count) is found in
# the whole process table from then on, read at most once per 0.1 s for all such trees.
MAX_WALK_READS = 1024
# /proc stat files a sample reads at most (one each: group, start time, CPU, RSS); a tree
# larger than that is found in the process table, which gives them all in one read.
MAX_STAT_READS = 256
# A tree is sampled again no sooner than this many times its last sample's CPU cost (and
# no later than this many intervals): a job of thousands of processes takes a bounded
# share of the event loop every job shares.
SAMPLE_COST_FACTOR = 20
PROCESS_TABLE = SharedTable()
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ProcessTree:
    """One job's child and the descendants the last sample saw alive, and those seen before
    that are still running though no longer under the child (escaped: their parent exited).

    `known` maps each such process's pid to its start time, its identity: a pid reused
    since is never signalled. Dead processes and reused pids are dropped at each sample; at
    most `max_tracked` are kept, those outside the job's process group first (the group
    signal misses them), then the newest.
    """

    def __init__(self, pid: int, max_tracked: int = MAX_TRACKED) -> None:
        self.pid = pid
        self.pgid = pid
        self.max_tracked = max_tracked
        self._exited = False
        self.known: dict[int, int] = {}
        self.peak_rss_bytes = 0
        self.cpu_s = 0.0
        self.samples = 0
        # The PROCESS_TABLE read the last sample walked (or the last one before this tree):
        # a sample that walks the table walks one read since then.
        self._table_read = PROCESS_TABLE.reads
        self._walkable = True  # small enough to walk its own children lists

    def sample(self, *, fresh: bool = False) -> None:
        """Refresh the descendant set; add up RSS and CPU of what it read. `fresh`: as the
        tree is now, even if another sample read the process table an instant ago (before
        signalling it).

        Only call while the root has not been reaped (its pid cannot be reused yet).
        Never raises for a process that vanished or whose pid was reused between reads.
        """
        if self._exited:
            return
        self.samples += 1
        found = self._descendants(fresh)
        escaped = [pid for pid in self.known if pid not in found]
        reads = 0
        unread: dict[int, int] = {}  # known escaped processes the budget left unread
        stats: dict[int, Stat] = {}
        # The root and the tree as found; then the escaped ones known, as far as the budget
        # goes (one left unread is kept as it was).
        for pid in (self.pid, *found, *escaped):
            stat = found.get(pid)
            if stat is None:
                if reads == MAX_STAT_READS:
                    if pid in self.known:
                        unread[pid] = self.known[pid]
                    continue
                reads += 1
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = read_stat(pid)
            # A known escaped process only if its pid was not reused since.
            if stat is not None and (pid in found or self.known.get(pid) in (None, stat.ticks)):
                stats[pid] = stat
        self.peak_rss_bytes = max(
            self.peak_rss_bytes, sum(s.rss_pages for s in stats.values()) * _PAGE_SIZE
        )
        self.cpu_s = max(self.cpu_s, sum(s.cpu_ticks for s in stats.values()) / _CLK_TCK)
        stats.pop(self.pid, None)
        tracked = sorted(stats.values(), key=lambda s: (s.pgrp == self.pgid, -s.ticks))
        self.known = {s.pid: s.ticks for s in tracked[: self.max_tracked]}
        for pid, ticks in unread.items():
            if len(self.known) < self.max_tracked:
                self.known.setdefault(pid, ticks)

    def _descendants(self, fresh: bool) -> dict[int, Stat | None]:
        """Every descendant, with its stat if the process table gave it; {} when /proc
        cannot be read now (out of fds): the escaped ones known are still kept."""
        try:
            if self._walkable:
                walked = walk_descendants(self.pid, MAX_WALK_READS)
                # Each walked process costs a stat read: a tree the budget could not read
                # whole (the newest, an escaping one perhaps, would go untracked) is found
                # in the process table, which gives every stat with it.
                if walked is not None and len(walked) < MAX_STAT_READS:
                    return dict.fromkeys(walked)
                self._walkable = False
            self._table_read, table = PROCESS_TABLE.children(self._table_read, fresh=fresh)
            return {s.pid: s for s in descendants_in(table, self.pid)}
        except OSError:
            return {}

    def root_exited(self) -> None:
        """The root was reaped: its pid may be reused, never touch it again."""
        self._exited = True

    def signal_all(self, sig: int) -> int:
        """Signal the process group and every known descendant still alive (escaped ones)."""
        sent = 0
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)
            sent += 1
        for pid, ticks in list(self.known.items()):
            sent += kill_if_same(pid, ticks, sig)
        return sent

    def survivors(self) -> list[int]:
        """Known descendants still running (zombies waiting for their parent excluded)."""
        alive: list[int] = []
        for pid, ticks in self.known.items():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = read_stat(pid)
                if stat.ticks == ticks and not _dead(stat):
                    alive.append(pid)
        return alive

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's, without CAP_KILL: no telling, not gone
            pass
        return True

    def kill_strays(self) -> int:
        """After the root exited: SIGKILL whatever of the job is left; how many were found."""
        strays = len(self.survivors())
        group = self.group_alive()
        if strays or group:
            self.signal_all(signal.SIGKILL)
        return strays


def _dead(stat: Stat) -> bool:
    """A zombie whose every thread has exited. The kernel shows a process whose main
    thread alone exited as a zombie too (its leader's state) while its other threads run:
    such a process is alive, and a child that means to outlive its job can make itself one."""
    if not stat.zombie:
        return False
    try:
        return len(os.listdir(f"/proc/{stat.pid}/task")) <= 1
    except FileNotFoundError:  # reaped meanwhile
        return True
    except OSError:  # unreadable: taken for alive, so it is killed rather than left
        return False


@dataclass(frozen=True)
class _Run:
    job: tuple[str, str]  # (INGEST_JOB_ID, INGEST_ATTEMPT) as its processes carry them
    root_pid: int


class OrphanSweeper:
    """Adopts, attributes, kills and reaps jobs' orphans (the daemon's one `ORPHANS`)."""

    def __init__(self) -> None:
        self.enabled = False
        self.kill_unattributed = False
        # Direct children waited for elsewhere (the fork server): never reaped or killed here.
        self.owned: set[int] = set()
        self._cheap = False
        self._tokens = itertools.count(1)
        self._runs: dict[int, _Run] = {}
        # Whose each adopted orphan is, as its environment said when first seen: (pid,
        # start ticks) -> run, or None. Later looks do not count: an exec can give it any
        # environment (another running job's name, and the next one's).
        self._first_owner: dict[tuple[int, int], tuple[str, str] | None] = {}
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
            # machine: too dear for every run's end.
            self._cheap = children_file() is not None
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

    def sweep_after_run(self, token: int, *, pipes_held: bool) -> int:
        """The sweep at a run's end (call before `run_ended`), done when cheap or when the
        pipes are still held, else left to the periodic sweep; how many of the run's
        orphans it killed."""
        if not self.enabled or not (pipes_held or self._cheap):
            return 0
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

    def _sweep(self, ending: int | None) -> tuple[int, int]:
        """(orphans of the ending run killed, orphans killed in all)"""
        running = {t: run for t, run in self._runs.items() if t != ending}
        running_jobs = {run.job for run in running.values()}
        ending_job = self._runs[ending].job if ending in self._runs else None
        charged = 0  # killed orphans of the ending run
        killed = 0
        seen: set[tuple[int, int]] = set()
        children = direct_children()
        # The process table, read once, and only if an orphan is to be killed.
        table: dict[int, list[Stat]] | None = None
        for pid in children - self.owned:
            try:
                stat = read_stat(pid)
                started = stat.ticks
                if _dead(stat):
                    if self.kill_unattributed or self._ours.get(pid) == started:
                        self._reap(pid)
                    continue
                key = (pid, started)
                if key in self._first_owner:
                    owner = self._first_owner[key]
                else:
                    owner = self._first_owner[key] = _run_of(psutil.Process(pid))
            except (psutil.Error, OSError, IndexError, ValueError):
                continue
            seen.add(key)
            if owner is not None:
                self._ours[pid] = started  # a job's: its zombie is ours to reap
                if owner in running_jobs:
                    continue
            elif self.kill_unattributed:
                waiting_on = self._waiting_on.setdefault(key, frozenset(self._runs))
                if waiting_on & running.keys():
                    continue
            else:
                continue  # not ours to kill
            if table is None:
                table = children_by_parent()
            self._kill_with_descendants(pid, started, table)
            killed += 1
            if owner is not None and owner == ending_job:
                charged += 1
            log.warning("killed pid %d, an orphan of job %s", pid, owner[0] if owner else "?")
        self._waiting_on = {k: v for k, v in self._waiting_on.items() if k in seen}
        self._first_owner = {k: v for k, v in self._first_owner.items() if k in seen}
        if len(self._ours) > 1024:  # forget processes that are gone for good
            self._ours = {p: t for p, t in self._ours.items() if os.path.exists(f"/proc/{p}")}
        return charged, killed

    def _kill_with_descendants(self, pid: int, started: int, table: dict[int, list[Stat]]) -> None:
        """SIGKILL the orphan (our child: its pid cannot be reused before we reap it) and
        its descendants as `table` lists them, each only if it is still the process the
        table saw; remember them all, since each becomes our child (and a zombie to reap)
        once its parent is gone."""
        try:
            for descendant in descendants_in(table, pid):
                if kill_if_same(descendant.pid, descendant.ticks):
                    self._ours[descendant.pid] = descendant.ticks
        finally:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self._ours[pid] = started

    def _reap(self, pid: int) -> None:
        self._ours.pop(pid, None)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _run_of(proc: psutil.Process) -> tuple[str, str] | None:
    try:
        env = proc.environ()
    except (psutil.AccessDenied, psutil.ZombieProcess):  # a zombie leader has no environ
        return None
    job, attempt = env.get("INGEST_JOB_ID"), env.get("INGEST_ATTEMPT")
    return (job, attempt) if job is not None and attempt is not None else None


ORPHANS = OrphanSweeper()
