"""Back off while children keep failing at start: every slot when nothing can start (a
missing command), one tenant's jobs when that tenant's children keep dying at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from supervisor.runner.outcome import EX_DATAERR, EX_TEMPFAIL, ChildOutcome, EndReason

log = logging.getLogger(__name__)


class _Backoff:
    """Failures in a row and the pause they earned: base_s doubling up to cap_s."""

    def __init__(self) -> None:
        self.failures = 0
        self.until = 0.0

    def fail(self, now: float, base_s: float, cap_s: float) -> float:
        self.failures += 1
        delay = min(cap_s, base_s * 2.0 ** min(self.failures - 1, 30))
        self.until = now + delay
        return delay


class StartFailureGate:
    """Shared by a daemon's slots; `record()` every child's outcome with its tenant.

    - A start failure (the child could not be started at all: a command that is not
      there, no fork server) pauses every slot: `await wait()` before each claim.
    - A child that dies within `fast_fail_s` with a non-zero status or a signal (an import
      error, or a parser crashing on one tenant's document: the two look alike) pauses
      that tenant's jobs only: a claimed job whose tenant has `tenant_remaining_s() > 0`
      goes back to the queue until then, so one tenant's input never holds up another's.
      Exits 65 (bad input) and 75 (a temporary failure such as a refused fetch) are the
      job's own trouble and pause nothing.

    Each pause doubles from `base_s` with every such failure in a row, up to `cap_s`; any
    other outcome resets it (for the tenant: any other outcome of its jobs).
    """

    def __init__(
        self,
        *,
        base_s: float = 0.5,
        cap_s: float = 30.0,
        fast_fail_s: float = 0.1,
        max_tenants: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.fast_fail_s = fast_fail_s
        self._max_tenants = max_tenants
        self._clock = clock
        self._all = _Backoff()
        self._tenants: dict[str, _Backoff] = {}  # oldest first

    def is_start_failure(self, outcome: ChildOutcome) -> bool:
        return outcome.ended is EndReason.START_FAILED

    def is_fast_crash(self, outcome: ChildOutcome) -> bool:
        if outcome.ended is not EndReason.EXITED or outcome.wall_s >= self.fast_fail_s:
            return False
        if outcome.signal is not None:
            return True
        return outcome.exit_code not in (0, EX_DATAERR, EX_TEMPFAIL)

    def record(self, outcome: ChildOutcome, tenant_id: str) -> None:
        if self.is_start_failure(outcome):
            delay = self._all.fail(self._clock(), self.base_s, self.cap_s)
            log.warning(
                "child failed at start %d time(s) in a row; pausing spawns for %.1fs: %s",
                self._all.failures,
                delay,
                (outcome.error or "")[:200],
            )
            return
        self._all = _Backoff()
        if not self.is_fast_crash(outcome):
            self._tenants.pop(tenant_id, None)
            return
        backoff = self._tenants.pop(tenant_id, None) or _Backoff()
        self._tenants[tenant_id] = backoff  # now the newest
        if len(self._tenants) > self._max_tenants:
            del self._tenants[next(iter(self._tenants))]
        delay = backoff.fail(self._clock(), self.base_s, self.cap_s)
        log.warning(
            "tenant %s: child died at once %d time(s) in a row; pausing its jobs for %.1fs: %s",
            tenant_id,
            backoff.failures,
            delay,
            (outcome.error or "")[:200],
        )

    @property
    def failures(self) -> int:
        """Start failures in a row (the ones that pause every slot)."""
        return self._all.failures

    @property
    def remaining_s(self) -> float:
        """How long every slot still waits before its next claim."""
        return max(0.0, self._all.until - self._clock())

    def tenant_remaining_s(self, tenant_id: str) -> float:
        """How long `tenant_id`'s jobs are still held back."""
        backoff = self._tenants.get(tenant_id)
        return 0.0 if backoff is None else max(0.0, backoff.until - self._clock())

    async def wait(self) -> None:
        # A deadline, not a condition: another slot's failure may push it later, so re-check.
        while (remaining := self.remaining_s) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
