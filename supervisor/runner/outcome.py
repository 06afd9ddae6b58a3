"""How a child ended, as one immutable record, and the operator-facing error message."""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

ERROR_LIMIT = 1000
EX_DATAERR = 65
EX_TEMPFAIL = 75  # the child's own word for trouble that may pass (a fetch, a store)


class EndReason(StrEnum):
    EXITED = "exited"
    BAD_RESULT = "bad_result"  # exited 0, but its RESULT line was not a usable result
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    LEASE_LOST = "lease_lost"
    SHUTDOWN = "shutdown"
    START_FAILED = "start_failed"


@dataclass(frozen=True)
class ChildOutcome:
    ended: EndReason
    exit_code: int | None
    signal: int | None
    wall_s: float  # spawn to reaped (the start-failure gate tells fast failures by it)
    cpu_s: float
    peak_rss_bytes: int
    progress: float
    progress_message: str | None
    result: Any
    error: str | None
    oom_killed: bool = False
    # The end of stderr the error is made from, scrubbed of the job's secrets.
    stderr_tail: str = ""
    dropped_bytes: int = 0  # stderr beyond its kept head and tail
    progress_lines: int = 0
    progress_rejected: int = 0
    stray_processes_killed: int = 0
    server_lost: bool = False  # ended (SHUTDOWN) because the fork server died under it
    # Never started for a reason of this host, not of the job (START_FAILED: its working
    # directory could not be made, the disk full): the job goes back to the queue unspent.
    host_fault: bool = False

    @property
    def succeeded(self) -> bool:
        return self.ended is EndReason.EXITED and self.exit_code == 0

    @property
    def permanent_failure(self) -> bool:
        """Another attempt cannot help: exit 65 (EX_DATAERR, the input is bad), or a child
        that promised a result and broke it (a bug in the child, not bad luck)."""
        if self.ended is EndReason.BAD_RESULT:
            return True
        return self.ended is EndReason.EXITED and self.exit_code == EX_DATAERR


def signal_name(signum: int) -> str:
    try:
        return _signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_end(
    ended: EndReason,
    *,
    exit_code: int | None,
    signum: int | None,
    timeout_s: float,
    stderr_tail: str,
    oom_killed: bool,
    start_error: str | None = None,
    result_error: str | None = None,
) -> str | None:
    """The error text for a job, at most ERROR_LIMIT characters; None for a success."""
    if ended is EndReason.START_FAILED:
        head = f"Worker failed to start: {start_error or 'unknown error'}"
    elif ended is EndReason.BAD_RESULT:
        head = f"Worker exited 0 with an unusable RESULT line: {result_error or 'unknown'}"
    elif ended is EndReason.TIMEOUT:
        head = f"Worker timed out after {timeout_s:g}s"
    elif ended is EndReason.CANCELLED:
        head = "Job cancelled; worker stopped"
    elif ended is EndReason.LEASE_LOST:
        head = "Lease lost; worker stopped"
    elif ended is EndReason.SHUTDOWN:
        head = "Supervisor shutting down; worker stopped"
    elif signum is not None:
        head = f"Worker killed by signal {signal_name(signum)}"
        if oom_killed:
            head += " (out of memory)"
    elif exit_code == 0:
        return None
    else:
        head = f"Worker exited with code {exit_code}"
        if oom_killed:
            head += " (out of memory)"
    detail = stderr_tail.strip()
    if not detail:
        return head[:ERROR_LIMIT]
    room = ERROR_LIMIT - len(head) - 2
    if room <= 0:
        return head[:ERROR_LIMIT]
    return f"{head}: {detail[-room:]}"
