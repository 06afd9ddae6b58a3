"""Back off spawning while children keep failing at start (a broken deploy, a bad path),
but not because one tenant's input keeps crashing its own jobs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from supervisor.runner.outcome import EX_DATAERR, EX_TEMPFAIL, ChildOutcome, EndReason

log = logging.getLogger(__name__)


class StartFailureGate:
    """Shared by a daemon's slots: `await wait()` before each claim, `record()` each
    child's outcome with its job's tenant.

    The pause holds every slot, so it is taken only for what looks like a broken deploy:
    - a start failure: the child could not be started at all (a missing command, no fork
      server, no room for a job directory);
    - a child that dies within `fast_fail_s` with a non-zero status or a signal (an import
      error; but also a parser crashing on one tenant's document: the two look alike),
      once the crashes since the last pause or normal ending span `TENANTS_FOR_A_DEPLOY`
      tenants, or as many as this daemon has seen end normally if fewer (a deploy with
      one tenant, a queue that never completed a job: any crash).

    One tenant's crashes, even with another tenant's crash among them, pause nothing on a
    daemon that has seen three tenants' jobs end normally (the tenants whose jobs the
    queue completed in the last day count, so a daemon that has just started knows
    them): they are those tenants' jobs failing, each retried with the usual backoff.
    Exits 65 (bad input) and 75 (a temporary failure such as a refused fetch) are normal
    endings. Each pause must be earned anew, by crashes of children started after the
    last one ended; it doubles from `base_s` up to `cap_s`, and the normal ending of a
    child started after the last pause began resets it (one started before says nothing
    of what caused the pause: jobs that were already running keep ending normally while
    nothing new can start).
    """

    TENANTS_FOR_A_DEPLOY = 3

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
        self.failures = 0  # pauses taken since the last normal ending
        self._until = 0.0
        self._paused_at = float("-inf")  # when the last pause began
        # Tenants whose jobs crashed since the last pause or normal ending (fewer than
        # TENANTS_FOR_A_DEPLOY), and up to that many whose jobs ended normally.
        self._crashed: set[str] = set()
        self._healthy: set[str] = set()

    def is_start_failure(self, outcome: ChildOutcome) -> bool:
        return outcome.ended is EndReason.START_FAILED

    def is_fast_crash(self, outcome: ChildOutcome) -> bool:
        if outcome.ended is not EndReason.EXITED or outcome.wall_s >= self.fast_fail_s:
            return False
        if outcome.signal is not None:
            return True
        return outcome.exit_code not in (0, EX_DATAERR, EX_TEMPFAIL)

    def seen_ending_normally(self, tenant_ids: Iterable[str]) -> None:
        """Tenants whose jobs are known to have ended normally (at start: those whose jobs
        the queue completed in the last day)."""
        for tenant_id in tenant_ids:
            if len(self._healthy) >= self.TENANTS_FOR_A_DEPLOY:
                return
            self._healthy.add(tenant_id)

    def record(self, outcome: ChildOutcome, tenant_id: str) -> None:
        if not self.is_start_failure(outcome) and not self.is_fast_crash(outcome):
            self.seen_ending_normally((tenant_id,))
            if self._clock() - outcome.wall_s < self._paused_at:
                return  # started before the last pause: says nothing of what caused it
            self.failures, self._until = 0, 0.0
            self._crashed.clear()
            return
        if self.remaining_s > 0:
            return  # started before this pause began: the pause already answers it
        if self.is_start_failure(outcome):
            self._pause("child failed at start", tenant_id, outcome)
            return
        self._crashed.add(tenant_id)
        enough = self.TENANTS_FOR_A_DEPLOY
        if len(self._crashed) >= max(1, min(enough, len(self._healthy))):
            self._pause("children die at once", tenant_id, outcome)

    def _pause(self, what: str, tenant_id: str, outcome: ChildOutcome) -> None:
        self.failures += 1
        self._crashed.clear()  # the next pause takes as many tenants' crashes again
        delay = min(self.cap_s, self.base_s * 2.0 ** min(self.failures - 1, 30))
        self._paused_at = self._clock()
        self._until = self._paused_at + delay
        log.warning(
            "%s (tenant %s; pause %d in a row); pausing spawns for %.1fs: %s",
            what,
            tenant_id,
            self.failures,
            delay,
            (outcome.error or "")[:200],
        )

    def pauses_in_a_row(self, open_for_s: float = 60.0) -> int:
        """Pauses in a row since a child last ended normally, while the last one ended less
        than `open_for_s` ago: after that long with spawns open and nothing failing (an
        idle daemon whose deploy was fixed) they say nothing of now."""
        if self._clock() - self._until >= open_for_s:
            return 0
        return self.failures

    @property
    def remaining_s(self) -> float:
        return max(0.0, self._until - self._clock())

    async def wait(self) -> None:
        # A deadline, not a condition: another slot's failure may push it later, so re-check.
        while (remaining := self.remaining_s) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
