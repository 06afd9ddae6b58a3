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

from supervisor.runner.proctable import direct_children, proc_stat

log = logging.getLogger(__name__)


def continue_if_stopped(server: int) -> None:
    """SIGCONT to the fork server `server` and to each of its spares that is stopped."""
    children: set[int] = set()
    with contextlib.suppress(OSError, psutil.Error):  # the server single-threaded: all listed
        children = direct_children(server)
    for pid in (server, *children):
        with contextlib.suppress(OSError, IndexError):
            name, fields = proc_stat(pid)
            if fields[0] == b"T" and (pid == server or name == "ingest-spare"):
                log.warning(
                    "%s %d was stopped (a child of the daemon's user can do that); continuing it",
                    "fork server" if pid == server else "spare",
                    pid,
                )
                os.kill(pid, signal.SIGCONT)
