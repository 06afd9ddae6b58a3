"""Fan-out of job events to side channels whose failures are isolated from each other and from jobs.

A sink's methods are called on the daemon's event loop and must return at once: a sink that
does I/O buffers the event and does the I/O in its own task or thread. A sink that raises is
logged and skipped; the job goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from supervisor.events import JobFinished, JobProgress, JobStarted

log = logging.getLogger(__name__)


class JobSink(Protocol):
    def job_started(self, event: JobStarted) -> None: ...

    def job_progress(self, event: JobProgress) -> None: ...

    def job_finished(self, event: JobFinished) -> None: ...

    async def aclose(self, timeout_s: float) -> None:
        """Flush what is buffered, giving up after `timeout_s`; log what could not be sent."""
        ...


class SinkFanout:
    """Calls every sink in turn; sinks need no start: they are ready when built."""

    def __init__(self, sinks: Sequence[JobSink]) -> None:
        self._sinks = list(sinks)

    def _each(self, method: str, call: Callable[[JobSink], None]) -> None:
        for sink in self._sinks:
            try:
                call(sink)
            except Exception:
                log.exception("sink %s failed in %s; continuing", type(sink).__name__, method)

    def job_started(self, event: JobStarted) -> None:
        self._each("job_started", lambda sink: sink.job_started(event))

    def job_progress(self, event: JobProgress) -> None:
        self._each("job_progress", lambda sink: sink.job_progress(event))

    def job_finished(self, event: JobFinished) -> None:
        self._each("job_finished", lambda sink: sink.job_finished(event))

    async def aclose(self, timeout_s: float) -> None:
        async def close_one(sink: JobSink) -> None:
            try:
                await asyncio.wait_for(sink.aclose(timeout_s), timeout_s + 0.5)
            except Exception:
                log.exception("sink %s did not close cleanly", type(sink).__name__)

        await asyncio.gather(*(close_one(s) for s in self._sinks))
