"""The background status writer: never on a job's critical path.

`submit()` only merges the change into the newest pending state of its job (a dict lookup)
and wakes the flusher task, which sends ready changes in batches (one request per batch),
retrying failed batches with exponential backoff and jitter. Progress is throttled per job;
memory stays bounded while the store is down by dropping pending non-final changes
(progress ticks first), never a final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_never,
    wait_exponential,
    wait_random,
)

from supervisor.aio import join_bounded
from supervisor.status.backend import StatusBackend, StatusStoreError
from supervisor.status.update import StatusUpdate, merge

log = logging.getLogger(__name__)

BatchHook = Callable[[int, float, bool], None]  # (batch size, seconds, succeeded)


@dataclass
class WriterStats:
    written: int = 0  # changes the store accepted (applied or ignored as stale)
    batches: int = 0  # requests that succeeded
    failures: int = 0  # requests that failed (each retry counts)
    dropped: int = 0  # non-final changes dropped to bound memory
    rejected: int = 0  # changes the store refused as invalid
    last_latency_s: float | None = None  # of the last request, failed or not


def _transient(exc: BaseException) -> bool:
    # tenacity hands us every BaseException: a cancellation (shutdown deadline) must end
    # the retries, not be retried.
    if not isinstance(exc, Exception):
        return False
    return not (isinstance(exc, StatusStoreError) and exc.permanent)


class StatusWriter:
    def __init__(
        self,
        backend: StatusBackend,
        *,
        max_pending_jobs: int = 10_000,
        progress_interval_s: float = 1.0,
        batch_size: int = 200,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 30.0,
        request_timeout_s: float = 15.0,
        on_batch: BatchHook | None = None,
    ) -> None:
        self.backend = backend
        self.max_pending_jobs = max(1, max_pending_jobs)
        self.progress_interval_s = progress_interval_s
        self.batch_size = max(1, batch_size)
        self.request_timeout_s = request_timeout_s
        self.on_batch = on_batch
        self.stats = WriterStats()
        # Exponential backoff plus jitter, so daemons that lost the store together do not
        # come back in lockstep.
        self._wait = wait_exponential(multiplier=retry_initial_s, max=retry_max_s) + wait_random(
            0, retry_initial_s
        )
        self._pending: dict[str, StatusUpdate] = {}
        self._not_before: dict[str, float] = {}  # throttled progress: monotonic send time
        # Eviction candidates, oldest first: progress ticks, then any other non-final.
        self._ticks: OrderedDict[str, None] = OrderedDict()
        self._nonfinal: OrderedDict[str, None] = OrderedDict()
        self._last_tick_sent: OrderedDict[str, float] = OrderedDict()
        self._inflight: list[StatusUpdate] = []
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- producer side (the daemon's event loop; must return at once) --

    @property
    def backlog(self) -> int:
        """Changes not yet written: pending plus the batch in flight."""
        return len(self._pending) + len(self._inflight)

    def submit(self, update: StatusUpdate) -> None:
        if self._closed:
            log.warning("status change for %s after writer closed; not written", update.job_id)
            return
        job = update.job_id
        old = self._pending.get(job)
        merged = update if old is None else merge(old, update)
        if old is None and len(self._pending) >= self.max_pending_jobs:
            self._evict()
        self._pending[job] = merged
        self._ticks.pop(job, None)
        self._nonfinal.pop(job, None)
        if merged.progress_only:
            self._ticks[job] = None
            last = self._last_tick_sent.get(job)
            if old is None and last is not None:
                self._not_before[job] = last + self.progress_interval_s
        else:
            self._not_before.pop(job, None)
        if not merged.final:
            self._nonfinal[job] = None
        self._wake.set()

    def _evict(self) -> None:
        for candidates in (self._ticks, self._nonfinal):
            while candidates:
                job, _ = candidates.popitem(last=False)
                if job in self._pending and not self._pending[job].final:
                    self._remove(job)
                    self.stats.dropped += 1
                    return
        # Only finals are pending: they are never dropped, so the bound is exceeded here.
        if len(self._pending) % 1000 == 0:
            log.warning(
                "status backlog holds %d final states; store unreachable?", len(self._pending)
            )

    def _remove(self, job: str) -> None:
        self._pending.pop(job, None)
        self._not_before.pop(job, None)
        self._ticks.pop(job, None)
        self._nonfinal.pop(job, None)

    # -- flusher --

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="status-writer")

    def _take_ready(self, now: float) -> tuple[list[StatusUpdate], float | None]:
        """Up to batch_size ready changes, and when the next throttled one becomes ready."""
        batch: list[StatusUpdate] = []
        next_due: float | None = None
        closing = self._closing.is_set()
        for job in list(self._pending):
            due = self._not_before.get(job, 0.0)
            if due > now and not closing:
                next_due = due if next_due is None else min(next_due, due)
                continue
            update = self._pending[job]
            self._remove(job)
            if update.progress_only:
                self._last_tick_sent[job] = now
                self._last_tick_sent.move_to_end(job)
                while len(self._last_tick_sent) > self.max_pending_jobs:
                    self._last_tick_sent.popitem(last=False)
            elif update.final:
                self._last_tick_sent.pop(job, None)
            batch.append(update)
            if len(batch) >= self.batch_size:
                break
        return batch, next_due

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            batch, next_due = self._take_ready(time.monotonic())
            if batch:
                self._inflight = batch
                await self._send(batch)
                self._inflight = []
                continue
            if self._closing.is_set() and not self._pending:
                return
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _sleep(self, seconds: float) -> None:
        # While closing, retry soon: the close deadline bounds how long we keep trying.
        if self._closing.is_set():
            seconds = min(seconds, 0.2)
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            return
        await asyncio.sleep(min(seconds, 0.2))

    def _failed(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "status write of %d changes failed (%s); retry %d",
            len(self._inflight),
            exc,
            state.attempt_number,
        )

    async def _apply_once(self, batch: list[StatusUpdate]) -> None:
        started = time.monotonic()
        ok = False
        try:
            async with asyncio.timeout(self.request_timeout_s):
                await self.backend.apply(batch)
            ok = True
        except TimeoutError:
            raise StatusStoreError("status write timed out") from None
        finally:
            latency = time.monotonic() - started
            self.stats.last_latency_s = latency
            if ok:
                self.stats.batches += 1
                self.stats.written += len(batch)
            else:
                self.stats.failures += 1
            if self.on_batch is not None:
                try:
                    self.on_batch(len(batch), latency, ok)
                except Exception:
                    log.exception("status writer batch hook failed")

    async def _send_retrying(self, batch: list[StatusUpdate]) -> None:
        retrying = AsyncRetrying(
            wait=self._wait,
            stop=stop_never,
            retry=retry_if_exception(_transient),
            sleep=self._sleep,
            before_sleep=self._failed,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._apply_once(batch)

    async def _send(self, batch: list[StatusUpdate]) -> None:
        try:
            await self._send_retrying(batch)
            return
        except StatusStoreError as exc:
            if len(batch) == 1:
                self.stats.rejected += 1
                log.error("status store rejected the change for job %s: %s", batch[0].job_id, exc)
                return
        # One bad change must not hold back the rest: send them one at a time.
        for i, update in enumerate(batch):
            self._inflight = batch[i:]
            await self._send([update])

    async def aclose(self, timeout_s: float = 10.0) -> int:
        """Flush with a deadline; returns how many changes could not be written (logged by
        job id), then closes the backend."""
        if self._closed:
            return 0
        self._closing.set()
        self._wake.set()
        if self._task is None and self._pending:
            self._task = asyncio.create_task(self._run(), name="status-writer-flush")
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=max(0.0, timeout_s))
            if not done:
                # Bounded: a cancel lost inside a store call must not hang the shutdown.
                await join_bounded(self._task, 0.0)
            elif self._task.exception() is not None:
                log.error("status writer stopped: %s", self._task.exception())
        self._closed = True
        lost = {u.job_id: u for u in self._inflight}
        lost.update(self._pending)
        if lost:
            finals = sorted(j for j, u in lost.items() if u.final)
            others = sorted(j for j, u in lost.items() if not u.final)
            log.error(
                "status writer closed with %d changes unwritten; final states for jobs: %s; "
                "other changes for jobs: %s",
                len(lost),
                ", ".join(finals) or "-",
                ", ".join(others) or "-",
            )
        self._pending.clear()
        self._inflight = []
        try:
            await asyncio.wait_for(self.backend.aclose(), 5.0)
        except Exception:
            log.exception("status backend did not close cleanly")
        return len(lost)
