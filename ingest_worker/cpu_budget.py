"""A bound on the CPU time one parse may take: a few kilobytes of a hostile document can ask
a parser for minutes (a PDF's content streams, HTML that Python's parser reads in time
quadratic in its length)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class OverBudget(BaseException):
    """Raised by the CPU timer inside the parser; a BaseException so that no `except
    Exception` in a parser swallows it."""


@contextmanager
def cpu_budget(seconds: float) -> Iterator[None]:
    """Raise OverBudget once this process has used `seconds` more CPU time (user + system).

    Only the main thread can take signals; elsewhere the child's RLIMIT_CPU is the bound.
    """

    def over(_signum: int, _frame: FrameType | None) -> None:
        raise OverBudget

    try:
        previous = signal.signal(signal.SIGPROF, over)
    except ValueError:  # not the main thread
        yield
        return
    # Fires again every 50 ms of CPU should the first raise land somewhere that ignores it.
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.05)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
