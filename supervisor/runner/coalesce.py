"""Hands progress to a callback at most once per interval, and always the final value."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str | None], None]


class ProgressCoalescer:
    def __init__(self, callback: ProgressCallback | None, interval_s: float) -> None:
        self._callback = callback
        self._interval = interval_s
        self._loop = asyncio.get_running_loop()
        self._latest: tuple[float, str | None] | None = None
        self._sent: tuple[float, str | None] | None = None
        self._last_sent_at = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    def update(self, percent: float, message: str | None) -> None:
        if self._callback is None:
            return
        self._latest = (percent, message)
        if self._timer is not None:
            return
        wait = self._last_sent_at + self._interval - time.monotonic()
        if wait <= 0:
            self._emit()
        else:
            self._timer = self._loop.call_later(wait, self._emit)

    def _emit(self) -> None:
        self._timer = None
        latest = self._latest
        if latest is None or latest == self._sent or self._callback is None:
            return
        self._sent = latest
        self._last_sent_at = time.monotonic()
        try:
            self._callback(*latest)
        except Exception:  # a sink's bug must not end the job
            log.exception("progress callback failed")

    def flush(self) -> None:
        """Deliver the final value now if it has not been delivered."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._emit()
