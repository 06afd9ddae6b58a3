"""The process table as /proc shows it: one process's children or descendants, every
process's children (read afresh, or shared between samples), a process's stat fields and
start time, and a kill that never reaches a pid reused since it was read. Used by containment
(`containment.py`) and the check for stopped processes (`stopped.py`)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass

import psutil

_children_path: dict[int, str | None] = {}  # by pid: a forked copy has its own


def children_file() -> str | None:
    """The children list of this process's main thread, or None on kernels without it.

    Orphans are reparented to the subreaper's first live thread, its main thread: that
    one file lists every adopted orphan (children our other threads started are owned).
    """
    pid = os.getpid()
    if pid not in _children_path:
        path = f"/proc/self/task/{pid}/children"
        _children_path[pid] = path if os.path.exists(path) else None
    return _children_path[pid]


def direct_children(pid: int | None = None) -> set[int]:
    """The children of process `pid` (this one when None) as its main thread lists them
    (all of them, for a single-threaded process or a subreaper's orphans); on kernels
    without that list, psutil's scan of every process (milliseconds)."""
    own = children_file()
    if own is None:
        return {p.pid for p in psutil.Process(pid).children()}
    path = own if pid is None else f"/proc/{pid}/task/{pid}/children"
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return {int(p) for p in b"".join(chunks).split()}


@dataclass(frozen=True, slots=True)
class Stat:
    """One process as one read of /proc/PID/stat shows it."""

    pid: int
    ppid: int
    pgrp: int
    ticks: int  # start time in clock ticks since boot: with the pid, its identity
    cpu_ticks: int  # user and system time, its own and that of the children it waited for
    rss_pages: int
    zombie: bool


def read_stat(pid: int) -> Stat:
    """`pid` now (OSError when gone; IndexError or ValueError for a line it cannot read)."""
    f = proc_stat(pid)[1]  # from field 3 (state) on
    cpu = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return Stat(pid, int(f[1]), int(f[2]), int(f[19]), cpu, int(f[21]), f[0] == b"Z")


def children_by_parent() -> dict[int, list[Stat]]:
    """Every process, by parent, from one read of /proc."""
    table: dict[int, list[Stat]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = read_stat(int(entry))
                table.setdefault(stat.ppid, []).append(stat)
    return table


def walk_descendants(pid: int, max_reads: int) -> list[int] | None:
    """Descendants of `pid`, read live from the children list of each of their threads:
    what it costs follows the tree, not the machine. None on kernels without those lists,
    or when the walk would take more than `max_reads` reads (a huge tree, or many
    threads): walk a `SharedTable` then."""
    if children_file() is None:
        return None
    found: list[int] = []
    seen = {pid}  # a pid reused during the walk must not make it go round
    below = [pid]
    reads = 0
    while below:
        parent = below.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:  # gone
            continue
        reads += len(tasks)
        if reads > max_reads:
            return None
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as fh:
                    listed = fh.read().split()
            except OSError:
                continue
            for child in map(int, listed):
                if child not in seen:
                    seen.add(child)
                    found.append(child)
                    below.append(child)
    return found


class SharedTable:
    """`children_by_parent()` shared by whoever asks within `max_age_s` of a read, so that
    the samples of several huge trees read /proc once between them."""

    def __init__(self, max_age_s: float = 0.1) -> None:
        self._max_age_s = max_age_s
        self._table: dict[int, list[Stat]] = {}
        self._read_at = -math.inf
        self.reads = 0

    def children(self, seen: int = 0, *, fresh: bool = False) -> tuple[int, dict[int, list[Stat]]]:
        """(the read's number, the table); read afresh when asked, when older than
        `max_age_s`, or when it is read `seen`: one the caller walked already, or made
        before it began."""
        if fresh or time.monotonic() - self._read_at > self._max_age_s or self.reads == seen:
            self._table = children_by_parent()
            self._read_at = time.monotonic()
            self.reads += 1
        return self.reads, self._table


def descendants_in(table: dict[int, list[Stat]], pid: int) -> list[Stat]:
    """Every descendant of `pid` in `table`, children first."""
    found: list[Stat] = []
    seen = {pid}  # a pid reused while /proc was read must not make the walk go round
    below = [pid]
    while below:
        for child in table.get(below.pop(), ()):
            if child.pid not in seen:
                seen.add(child.pid)
                found.append(child)
                below.append(child.pid)
    return found


def kill_if_same(pid: int, ticks: int, sig: int = signal.SIGKILL) -> bool:
    """Send `sig` to `pid` if it is still the process that started at `ticks`: through a pidfd,
    so that a pid freed and reused since is never signalled. Without pidfds (a kernel
    before 5.3, a seccomp filter, a Python built without them) the start time is checked
    just before a plain kill."""
    fd: int | None
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):
        fd = None
    try:
        if start_ticks(pid) != ticks:
            return False
        if fd is None:
            os.kill(pid, sig)
        else:
            signal.pidfd_send_signal(fd, sig)
        return True
    except (OSError, IndexError, ValueError):
        return False
    finally:
        if fd is not None:
            os.close(fd)


def proc_stat(pid: int) -> tuple[str, list[bytes]]:
    """A process's name (comm) and the fields of /proc/PID/stat after it (from the state,
    field 3, on); one read."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    end = stat.rindex(b")")  # a name may hold ')' and spaces itself
    return stat[stat.index(b"(") + 1 : end].decode(errors="replace"), stat[end + 2 :].split()


def start_ticks(pid: int) -> int:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat):
    with the pid, its identity, unmoved by wall-clock steps (psutil's create_time is)."""
    return int(proc_stat(pid)[1][19])
