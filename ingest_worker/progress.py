"""PROGRESS and RESULT lines on stdout, flushed as they are written."""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

_MAX_MESSAGE = 200


class Reporter:
    """Writes monotonic progress: a later stage never shows a lower percentage."""

    __slots__ = ("_last", "_out", "secrets")

    def __init__(self, out: TextIO, secrets: list[str] | None = None) -> None:
        self._out = out
        self._last = -1
        # Values of the job's secret-named keys: URLs and error text may quote them.
        self.secrets = [s for s in secrets or () if len(s) >= 4]

    def _scrub(self, text: str) -> str:
        for value in self.secrets:
            text = text.replace(value, "[redacted]")
        return text

    def progress(self, percent: float, message: str = "") -> None:
        pct = max(self._last, min(100, max(0, int(percent))))
        self._last = pct
        text = self._scrub(" ".join(message.split()))[:_MAX_MESSAGE]
        self._out.write(f"PROGRESS: {pct} {text}\n" if text else f"PROGRESS: {pct}\n")
        self._out.flush()

    def note(self, message: str) -> None:
        """A message at the current percentage (a wait, a retry)."""
        self.progress(max(self._last, 0), message)

    def stage(self, start: float, end: float, done: int, total: int, message: str) -> None:
        """Progress `done/total` of the way through the band [start, end]."""
        frac = done / total if total > 0 else 1.0
        self.progress(start + (end - start) * min(1.0, frac), message)

    def result(self, payload: dict[str, Any]) -> None:
        line = self._scrub(json.dumps(payload, separators=(",", ":")))
        self._out.write(f"RESULT: {line}\n")
        self._out.flush()
