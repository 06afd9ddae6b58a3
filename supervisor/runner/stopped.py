"""Continuing a fork server or spare that was stopped.

A child of the daemon's user can send SIGSTOP (or SIGTSTP) to its parent, the fork server,
which then starts nothing and reaps nothing, or to the spares waiting beside it, which
would hold the next job until its timeout. The daemon continues them; jobs' own processes
are left as they are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

import psutil

log = logging.getLogger(__name__)


def continue_if_stopped(server: int) -> None:
    """SIGCONT to the fork server `server` and to each of its spares that is stopped."""
    children: list[int] = []
    try:  # the server is single-threaded: its children are all listed here
        with open(f"/proc/{server}/task/{server}/children", "rb") as fh:
            children = [int(pid) for pid in fh.read().split()]
    except OSError:  # a kernel without that file: psutil reads every process instead
        with contextlib.suppress(psutil.Error):
            children = [proc.pid for proc in psutil.Process(server).children()]
    for pid in (server, *children):
        with contextlib.suppress(OSError):
            name, stopped = _name_and_stopped(pid)
            if stopped and (pid == server or name == "ingest-spare"):
                log.warning(
                    "%s %d was stopped (a child of the daemon's user can do that); continuing it",
                    "fork server" if pid == server else "spare",
                    pid,
                )
                os.kill(pid, signal.SIGCONT)


def _name_and_stopped(pid: int) -> tuple[str, bool]:
    """A process's name (comm) and whether it is stopped, from one read of its stat."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    end = stat.rindex(b")")
    name = stat[stat.index(b"(") + 1 : end].decode(errors="replace")
    return name, stat[end + 2 : end + 3] == b"T"
