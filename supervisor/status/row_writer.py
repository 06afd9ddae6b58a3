"""Writing status rows to the store: bounded requests, retries with backoff, and what to do
with a batch the store will not take.

A batch the store rejects as invalid is split so that one bad row cannot hold back the
others; a single row it rejects is logged, counted and skipped (a final row is tried once
more without the child's texts and result). A batch that keeps failing is split too, so a
batch too large for the store is not retried whole for ever. A row another session holds
locked (SQLSTATE 55P03) is not retried: its job is reported in `locked` for the projector
to park.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time

from supervisor.status.backend import StatusBackend, StatusStoreError
from supervisor.status.outbox import bare_final
from supervisor.status.reporting import ProjectorHooks, ProjectorStats
from supervisor.status.update import StatusUpdate

# The projector's logger: these lines are part of what the projector reports.
log = logging.getLogger("supervisor.status.projector")

# A store request carries at most this much row data (estimated); bigger batches are split.
REQUEST_BYTES = 4 * 1024 * 1024
# A batch that failed this many times in a row is split in halves: a batch too large for
# the store (a size limit) must not be retried whole for ever. One that timed out is split
# at once, and later requests carry at most half as many rows (see RowWriter.request_rows).
SPLIT_AFTER_FAILURES = 3
# Requests written in time, in a row, after which that cap doubles.
GROW_AFTER = 10


def _weight(row: StatusUpdate) -> int:
    """Rough size of a row in a request: its texts and result, plus the fixed columns."""
    result = 0 if row.result is None else len(json.dumps(row.result))
    return 300 + result + len(row.error or "") + len(row.progress_message or "")


def _transient_store_error(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not (isinstance(exc, StatusStoreError) and exc.permanent)


class RowWriter:
    """The projector's store side (see the module's docstring)."""

    def __init__(
        self,
        backend: StatusBackend,
        hooks: ProjectorHooks,
        stats: ProjectorStats,
        *,
        request_timeout_s: float,
        retry_initial_s: float,
        retry_max_s: float,
    ) -> None:
        self.backend = backend
        self.hooks = hooks
        self.stats = stats
        self.request_timeout_s = request_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.give_up_at: float | None = None  # monotonic; set while draining at shutdown
        self.locked: set[str] = set()  # jobs whose rows another session holds locked
        # The most rows one request carries, once a request timed out (None: no cap): a slow
        # store then drains a backlog in requests it can take in time, rather than timing out
        # on every full batch first.
        self.request_rows: int | None = None
        self._in_time = 0  # requests written in time since the cap last changed

    async def _apply_once(self, rows: list[StatusUpdate]) -> None:
        started = time.monotonic()
        ok = False
        try:
            async with asyncio.timeout(self.request_timeout_s):
                await self.backend.apply(rows)
            ok = True
        except TimeoutError:
            raise StatusStoreError("status write timed out", timed_out=True) from None
        finally:
            with contextlib.suppress(Exception):
                self.hooks.on_request(len(rows), time.monotonic() - started, ok)

    async def _apply_retrying(self, rows: list[StatusUpdate]) -> str:
        """'ok' once the store took the rows; 'rejected' when it refused them as invalid;
        'split' when a batch of several rows kept failing or holds a locked row; 'too_slow'
        when a batch of several rows timed out; 'stuck' when one row is locked by another
        session (any other failure of one row is retried for as long as it lasts: a store
        that refuses writes refuses them all);
        'gave_up' at the shutdown deadline (the entries then stay pending for another
        projector)."""
        delay = self.retry_initial_s
        attempt = 0
        while True:
            try:
                await self._apply_once(rows)
                return "ok"
            except Exception as exc:
                if not _transient_store_error(exc):
                    return "rejected"
                if isinstance(exc, StatusStoreError) and exc.row_locked:
                    return "split" if len(rows) > 1 else "stuck"
                if isinstance(exc, StatusStoreError) and exc.timed_out and len(rows) > 1:
                    return "too_slow"
                attempt += 1
                if attempt == 1 or attempt % 10 == 0:
                    log.warning(
                        "status write of %d rows failed (%s); retrying (attempt %d)",
                        len(rows),
                        exc,
                        attempt,
                    )
                if len(rows) > 1 and attempt >= SPLIT_AFTER_FAILURES:
                    return "split"
            pause = delay + random.uniform(0, self.retry_initial_s)
            delay = min(delay * 2, self.retry_max_s)
            if self.give_up_at is not None:
                left = self.give_up_at - time.monotonic()
                if left <= 0:
                    return "gave_up"
                pause = min(pause, left, 0.2)
            await asyncio.sleep(pause)

    async def _apply(self, rows: list[StatusUpdate]) -> bool:
        """Write rows; False only when giving up at the shutdown deadline."""
        outcome = await self._apply_retrying(rows)
        if outcome == "ok":
            self._took(len(rows))
            return True
        if outcome == "too_slow":
            self.request_rows, self._in_time = max(1, len(rows) // 2), 0
        if outcome == "gave_up":
            return False
        if outcome == "stuck":
            self.locked.add(rows[0].job_id)
            log.warning(
                "status row of job %s is locked by another session; parked, the reconciler "
                "writes it once it is free",
                rows[0].job_id,
            )
            return True
        if outcome == "rejected" and len(rows) == 1:
            row = rows[0]
            bare = bare_final(row)
            if row.final and bare != row:
                log.error(
                    "status store refused the final row of job %s; writing it without the "
                    "child's message, error and result",
                    row.job_id,
                )
                return await self._apply([bare])
            self.stats.rejected += 1
            with contextlib.suppress(Exception):
                self.hooks.on_rejected(1)
            log.error("status store refused the row of job %s; skipped", row.job_id)
            return True
        # A refused or oversized batch: halves, so one bad row costs a few requests.
        mid = len(rows) // 2
        return await self._apply(rows[:mid]) and await self._apply(rows[mid:])

    def _took(self, rows: int) -> None:
        """A request of `rows` was written in time: the cap grows back after a while."""
        cap = self.request_rows
        if cap is None or rows < cap:
            return
        self._in_time += 1
        if self._in_time >= GROW_AFTER:
            self.request_rows, self._in_time = cap * 2, 0

    async def write(self, rows: list[StatusUpdate]) -> bool:
        """Write rows, in requests of bounded size (and at most `request_rows` rows); False
        only when giving up at the shutdown deadline (`give_up_at`). Jobs whose rows were
        locked are added to `locked`."""
        request: list[StatusUpdate] = []
        size = 0
        for row in rows:
            weight = _weight(row)
            full = self.request_rows is not None and len(request) >= self.request_rows
            if request and (full or size + weight > REQUEST_BYTES):
                if not await self._apply(request):
                    return False
                request, size = [], 0
            request.append(row)
            size += weight
        return not request or await self._apply(request)
