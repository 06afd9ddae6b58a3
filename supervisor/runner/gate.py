"""Back off spawning while children keep failing at start (a broken deploy, a bad path)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from supervisor.runner.outcome import EX_DATAERR, EX_TEMPFAIL, ChildOutcome, EndReason

log = logging.getLogger(__name__)


class StartFailureGate:
    """Shared by a daemon's slots: `await wait()` before each spawn, `record()` after.

    A start failure, or a child that dies with a non-zero status within `fast_fail_s`
    (an import error, a missing module), doubles the pause before the next spawn up to
    `cap_s`; any other outcome resets it. Exits 65 (bad input) and 75 (a temporary
    failure such as a refused fetch) are the job's own trouble and count as normal runs:
    the pause holds every slot, so one tenant's bad input must not trip it for all.
    """

    def __init__(
        self,
        *,
        base_s: float = 0.5,
        cap_s: float = 30.0,
        fast_fail_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.fast_fail_s = fast_fail_s
        self._clock = clock
        self.failures = 0
        self._until = 0.0

    def is_start_failure(self, outcome: ChildOutcome) -> bool:
        if outcome.ended is EndReason.START_FAILED:
            return True
        if outcome.ended is not EndReason.EXITED or outcome.wall_s >= self.fast_fail_s:
            return False
        if outcome.signal is not None:
            return True
        return outcome.exit_code not in (0, EX_DATAERR, EX_TEMPFAIL)

    def record(self, outcome: ChildOutcome) -> None:
        if not self.is_start_failure(outcome):
            self.failures = 0
            self._until = 0.0
            return
        self.failures += 1
        delay = self.delay_s
        self._until = self._clock() + delay
        log.warning(
            "child failed at start %d time(s) in a row; pausing spawns for %.1fs: %s",
            self.failures,
            delay,
            (outcome.error or "")[:200],
        )

    @property
    def delay_s(self) -> float:
        if self.failures == 0:
            return 0.0
        return min(self.cap_s, self.base_s * 2.0 ** min(self.failures - 1, 30))

    @property
    def remaining_s(self) -> float:
        return max(0.0, self._until - self._clock())

    async def wait(self) -> None:
        # A deadline, not a condition: another slot's failure may push it later, so re-check.
        while (remaining := self.remaining_s) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
