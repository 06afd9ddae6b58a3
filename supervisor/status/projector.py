"""The status projector: a consumer group that writes the status outbox to `ingestion_jobs`.

Every daemon runs one. It reads entries in batches (`XREADGROUP`), keeps the newest
snapshot per job, applies them in one store request, and acknowledges the batch only after
the store accepted it. Entries a dead or stopped consumer held longer than `claim_idle_s`
are taken over (`XAUTOCLAIM`). A redelivered snapshot is harmless: the store applies a
snapshot only when it is newer than the row.

While the store is down the projector keeps retrying its batch with backoff and the outbox
grows in Redis, where nothing is lost when a daemon dies. A batch the store rejects as
invalid is split so that one bad row cannot hold back the others; a single row it rejects
is logged, counted and acknowledged. A row another session holds locked (the store says
so: SQLSTATE 55P03, after the function's one-second lock timeout) is parked: its job goes in
the queue's `status:parked` set before its entries are acknowledged, so the rest goes on
and the outbox is trimmed as usual; this projector parks that job's new entries too for
PARK_S, and the reconciler writes the current row of parked jobs on each sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from supervisor.aio import sleep_unless
from supervisor.queue.jobqueue import AnyRedis
from supervisor.queue.keys import QueueKeys
from supervisor.redis_retry import TRANSIENT
from supervisor.status.backend import StatusBackend, StatusStoreError
from supervisor.status.outbox import GROUP, BadEntry, OutboxEntry, bare_final, parse_entry
from supervisor.status.reporting import ProjectorHooks, ProjectorStats
from supervisor.status.update import StatusUpdate, newest_per_job

log = logging.getLogger(__name__)

# A store request carries at most this much row data (estimated); bigger batches are split.
REQUEST_BYTES = 4 * 1024 * 1024
# A batch that failed this many times in a row is split in halves: a batch too large for
# the store (a timeout, a size limit) must not be retried whole for ever.
SPLIT_AFTER_FAILURES = 3
# A consumer name idle this long that holds nothing is a daemon's that is gone (killed, or
# stopped while the store was down): forgotten, so the group does not grow with restarts.
# Far longer than a live projector is ever idle (it reads every half second).
FORGET_IDLE_S = 3600.0
# How long a projector parks a parked job's new entries without trying them (each try of a
# batch holding a locked row costs a lock timeout per halving).
PARK_S = 10.0


def _weight(row: StatusUpdate) -> int:
    """Rough size of a row in a request: its texts and result, plus the fixed columns."""
    result = 0 if row.result is None else len(json.dumps(row.result))
    return 300 + result + len(row.error or "") + len(row.progress_message or "")


def _transient_store_error(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not (isinstance(exc, StatusStoreError) and exc.permanent)


class StatusProjector:
    def __init__(
        self,
        client: AnyRedis,
        keys: QueueKeys,
        backend: StatusBackend,
        *,
        consumer: str,
        batch_size: int = 500,
        block_ms: int = 500,
        linger_s: float = 0.05,
        claim_idle_s: float = 30.0,
        forget_idle_s: float = FORGET_IDLE_S,
        claim_interval_s: float = 5.0,
        request_timeout_s: float = 15.0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
        hooks: ProjectorHooks | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.backend = backend
        self.consumer = consumer
        self.batch_size = max(1, batch_size)
        self.block_ms = max(1, block_ms)
        self.linger_s = linger_s
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.claim_interval_s = claim_interval_s
        self.forget_idle_ms = int(forget_idle_s * 1000)
        self.request_timeout_s = request_timeout_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.hooks = hooks or ProjectorHooks()
        self.stats = ProjectorStats()
        self._group_ready = False
        self._stopping = asyncio.Event()
        self._give_up_at: float | None = None  # monotonic; set while draining at shutdown
        self._stuck: set[str] = set()  # jobs of the batch in hand whose rows are locked
        self._parked_until: dict[str, float] = {}  # job -> monotonic end of its parking

    # ---- Redis side ---------------------------------------------------------------------

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From id 0: rows appended before any projector ran are projected too.
            await self.client.xgroup_create(self.keys.status_outbox, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _pause(self, seconds: float) -> None:
        await sleep_unless(self._stopping, seconds)

    def forget_group(self) -> None:
        """The group is to be created again before the next read (it was found missing)."""
        self._group_ready = False

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """A Redis call; a group lost with its stream (a Redis restarted without
        persistence) is created again and the call retried once."""
        await self.ensure_group()
        try:
            return await fn()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            await self.ensure_group()
            return await fn()

    async def _read(self, last_id: str, block_ms: int | None) -> list[tuple[Any, Any]]:
        reply: Any = await self._call(
            lambda: self.client.xreadgroup(
                GROUP,
                self.consumer,
                {self.keys.status_outbox: last_id},
                count=self.batch_size,
                block=block_ms,
            )
        )
        out: list[tuple[Any, Any]] = []
        for _stream, entries in reply or []:
            out.extend((eid, fields) for eid, fields in entries if fields)
        return out

    async def _claim_stale(self) -> list[tuple[Any, Any]]:
        """Entries another consumer was given and has not acknowledged for too long."""
        reply: Any = await self._call(
            lambda: self.client.xautoclaim(
                self.keys.status_outbox,
                GROUP,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id="0-0",
                count=self.batch_size,
            )
        )
        entries = [(eid, fields) for eid, fields in reply[1] if fields]
        # Ids whose entries were trimmed away meanwhile: nothing to write, just forget them.
        deleted = list(reply[2]) if len(reply) > 2 else []
        if deleted:
            await self.client.xack(self.keys.status_outbox, GROUP, *deleted)
        self.stats.claimed += len(entries)
        return entries

    async def _park(self, job_ids: set[str]) -> None:
        """Hand locked rows to the reconciler (before their entries are acknowledged)."""
        await self.client.sadd(self.keys.status_parked, *job_ids)
        until = time.monotonic() + PARK_S
        for job_id in job_ids:
            if job_id not in self._parked_until:
                self.stats.parked += 1
            self._parked_until[job_id] = until

    async def _ack(self, ids: Sequence[str]) -> None:
        if ids:
            await self.client.xack(self.keys.status_outbox, GROUP, *ids)

    # ---- store side ---------------------------------------------------------------------

    async def _apply_once(self, rows: list[StatusUpdate]) -> None:
        started = time.monotonic()
        ok = False
        try:
            async with asyncio.timeout(self.request_timeout_s):
                await self.backend.apply(rows)
            ok = True
        except TimeoutError:
            raise StatusStoreError("status write timed out") from None
        finally:
            with contextlib.suppress(Exception):
                self.hooks.on_request(len(rows), time.monotonic() - started, ok)

    async def _apply_retrying(self, rows: list[StatusUpdate]) -> str:
        """'ok' once the store took the rows; 'rejected' when it refused them as invalid;
        'split' when a batch of several rows kept failing or holds a locked row; 'stuck'
        when one row is locked by another session (any other failure of one row is
        retried for as long as it lasts: a store that refuses writes refuses them all);
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
            if self._give_up_at is not None:
                left = self._give_up_at - time.monotonic()
                if left <= 0:
                    return "gave_up"
                pause = min(pause, left, 0.2)
            await asyncio.sleep(pause)

    async def _apply(self, rows: list[StatusUpdate]) -> bool:
        """Write rows; False only when giving up at the shutdown deadline."""
        outcome = await self._apply_retrying(rows)
        if outcome == "ok":
            return True
        if outcome == "gave_up":
            return False
        if outcome == "stuck":
            self._stuck.add(rows[0].job_id)
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

    async def _apply_all(self, rows: list[StatusUpdate]) -> bool:
        """Rows in requests of bounded size."""
        request: list[StatusUpdate] = []
        size = 0
        for row in rows:
            weight = _weight(row)
            if request and size + weight > REQUEST_BYTES:
                if not await self._apply(request):
                    return False
                request, size = [], 0
            request.append(row)
            size += weight
        return not request or await self._apply(request)

    # ---- one batch ----------------------------------------------------------------------

    async def project(self, raw: list[tuple[Any, Any]]) -> bool:
        """Write one batch of raw entries and acknowledge it; False if the store could not
        take it before the shutdown deadline (then nothing is acknowledged)."""
        if not raw:
            return True
        entries: list[OutboxEntry] = []
        ids: list[str] = []
        for eid, fields in raw:
            try:
                entry = parse_entry(eid, fields, self.keys.queue)
            except BadEntry as exc:
                self.stats.bad_entries += 1
                log.error("%s; acknowledged and skipped", exc)
                ids.append(eid.decode() if isinstance(eid, bytes) else str(eid))
                continue
            entries.append(entry)
            ids.append(entry.entry_id)
        now = time.monotonic()
        self._parked_until = {j: t for j, t in self._parked_until.items() if t > now}
        self._stuck = {e.row.job_id for e in entries if e.row.job_id in self._parked_until}
        rows = [e.row for e in entries if e.row.job_id not in self._stuck]
        if rows and not await self._apply_all(newest_per_job(rows)):
            return False
        if self._stuck:
            await self._park(self._stuck)
        await self._ack(ids)
        now_ms = time.time() * 1000
        for entry in entries:
            with contextlib.suppress(Exception):
                self.hooks.on_lag(max(0.0, (now_ms - entry.appended_ms) / 1000.0))
        return True

    # ---- loops --------------------------------------------------------------------------

    async def run(self) -> None:
        """Project until `stop()`; Redis outages are waited out with backoff."""
        pause = 0.2
        next_claim = 0.0
        first = True
        while not self._stopping.is_set():
            try:
                if first:
                    await self._project_own_pending()
                    first = False
                if time.monotonic() >= next_claim:
                    # Set first: a failing take-over must not be retried in a tight loop.
                    next_claim = time.monotonic() + self.claim_interval_s
                    await self.project(await self._claim_stale())
                    await self.forget_idle_consumers()
                batch = await self._read(">", self.block_ms)
                await self.project(batch)
                if 0 < len(batch) < self.batch_size:
                    # Under a steady trickle, let a few more changes gather: fewer, larger
                    # store requests, and a job's quick changes collapse into one row.
                    await self._pause(self.linger_s)
                pause = 0.2
            except TRANSIENT as exc:
                log.warning("status projector: Redis unavailable (%s); retrying", exc)
                await self._pause(pause)
                pause = min(pause * 2, 5.0)
            except Exception:
                log.exception("status projector step failed; continuing")
                await self._pause(1.0)

    def stop(self) -> None:
        self._stopping.set()

    async def _project_own_pending(self) -> bool:
        """What this consumer name was given and never acknowledged (a restart under the
        same name, a stopped drain): all of it, batch by batch, each entry once."""
        after = "0"
        while True:
            batch = await self._read(after, None)
            if not batch:
                return True
            if not await self.project(batch):
                return False
            last = batch[-1][0]
            after = last.decode() if isinstance(last, bytes) else str(last)

    async def forget_idle_consumers(self) -> None:
        """Remove other consumers idle longer than `forget_idle_s` that hold no entry
        (deleting a consumer drops its pending entries: never one that has any)."""
        consumers: Any = await self.client.xinfo_consumers(self.keys.status_outbox, GROUP)
        for consumer in consumers:
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            if name == self.consumer or int(consumer["pending"]) > 0:
                continue
            if int(consumer["idle"]) > self.forget_idle_ms:
                await self.client.xgroup_delconsumer(self.keys.status_outbox, GROUP, name)

    async def _forget_consumer(self) -> None:
        """Remove this consumer from the group once it holds nothing: the group's consumer
        list would otherwise grow with every restart. Never with entries pending: deleting
        a consumer drops its pending entries for good."""
        mine: Any = await self.client.xpending_range(
            self.keys.status_outbox, GROUP, min="-", max="+", count=1, consumername=self.consumer
        )
        if not mine:
            await self.client.xgroup_delconsumer(self.keys.status_outbox, GROUP, self.consumer)

    async def drain(self, deadline_s: float) -> bool:
        """At shutdown: project what is left (this consumer's pending entries, then new
        ones) until the outbox is empty or the deadline passes. True when nothing was left
        behind; whatever is left stays in the outbox for the other projectors."""
        self._give_up_at = time.monotonic() + deadline_s
        try:
            async with asyncio.timeout(deadline_s):
                if not await self._project_own_pending():
                    return False
                while True:
                    batch = await self._read(">", None)
                    if not batch:
                        await self._forget_consumer()
                        return True
                    if not await self.project(batch):
                        return False
        except TimeoutError:
            return False
        except TRANSIENT as exc:
            log.warning("status projector: Redis unavailable at shutdown (%s)", exc)
            return False
