"""Back off spawning while children keep failing at start (a broken deploy, a bad path),
but not because one tenant's input keeps crashing its own jobs."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from supervisor.runner.outcome import EX_DATAERR, EX_TEMPFAIL, ChildOutcome, EndReason

log = logging.getLogger(__name__)


class StartFailureGate:
    """Shared by a daemon's slots: `await wait()` before each claim, `record()` each
    child's outcome with its job's tenant.

    The pause holds every slot, so it is taken only for what looks like a broken deploy:
    - a start failure: the child could not be started at all (a missing command, no fork
      server, no room for a job directory);
    - a child that dies within `fast_fail_s` with a non-zero status or a signal (an import
      error; but also a parser crashing on one tenant's document, the two look alike),
      when the crash before it in the same run of crashes was another tenant's, or when
      no other tenant's job has ended normally in the last `healthy_window_s` (a deploy
      with one tenant, a daemon that has just started, everything failing for a while).

    One tenant's crashes while other tenants' jobs end normally pause nothing: they are
    that tenant's jobs failing, each retried with the usual backoff. Exits 65 (bad input)
    and 75 (a temporary failure such as a refused fetch) are normal endings. Each pause
    doubles from `base_s` up to `cap_s`; any normal ending resets it.
    """

    def __init__(
        self,
        *,
        base_s: float = 0.5,
        cap_s: float = 30.0,
        fast_fail_s: float = 0.1,
        healthy_window_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.fast_fail_s = fast_fail_s
        self.healthy_window_s = healthy_window_s
        self._clock = clock
        self.failures = 0  # pauses taken in a row
        self._until = 0.0
        self._last_crash_tenant: str | None = None  # in the current run of crashes
        # The last two tenants whose jobs ended normally, and when: enough to tell whether
        # any tenant but a given one did.
        self._healthy: collections.OrderedDict[str, float] = collections.OrderedDict()

    def is_start_failure(self, outcome: ChildOutcome) -> bool:
        return outcome.ended is EndReason.START_FAILED

    def is_fast_crash(self, outcome: ChildOutcome) -> bool:
        if outcome.ended is not EndReason.EXITED or outcome.wall_s >= self.fast_fail_s:
            return False
        if outcome.signal is not None:
            return True
        return outcome.exit_code not in (0, EX_DATAERR, EX_TEMPFAIL)

    def record(self, outcome: ChildOutcome, tenant_id: str) -> None:
        now = self._clock()
        if self.is_start_failure(outcome):
            self._pause(now, "child failed at start", outcome)
            return
        if not self.is_fast_crash(outcome):
            self.failures, self._until, self._last_crash_tenant = 0, 0.0, None
            self._healthy.pop(tenant_id, None)
            self._healthy[tenant_id] = now
            if len(self._healthy) > 2:
                self._healthy.popitem(last=False)
            return
        previous, self._last_crash_tenant = self._last_crash_tenant, tenant_id
        if previous not in (None, tenant_id) or not self._others_healthy(tenant_id, now):
            self._pause(now, "children die at once", outcome)

    def _others_healthy(self, tenant_id: str, now: float) -> bool:
        """Whether another tenant's job ended normally within the window."""
        since = now - self.healthy_window_s
        return any(t != tenant_id and at >= since for t, at in self._healthy.items())

    def _pause(self, now: float, what: str, outcome: ChildOutcome) -> None:
        self.failures += 1
        delay = min(self.cap_s, self.base_s * 2.0 ** min(self.failures - 1, 30))
        self._until = now + delay
        log.warning(
            "%s (%d time(s) in a row); pausing spawns for %.1fs: %s",
            what,
            self.failures,
            delay,
            (outcome.error or "")[:200],
        )

    @property
    def remaining_s(self) -> float:
        return max(0.0, self._until - self._clock())

    async def wait(self) -> None:
        # A deadline, not a condition: another slot's failure may push it later, so re-check.
        while (remaining := self.remaining_s) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
