"""The status projector: a consumer group that writes the status outbox to `ingestion_jobs`.

Every daemon runs one. It reads entries in batches (`XREADGROUP`), keeps the newest
snapshot per job, applies them in one store request, and acknowledges the batch only after
the store accepted it. Entries a dead or stopped consumer held longer than `claim_idle_s`
are taken over (`XAUTOCLAIM`). A redelivered snapshot is harmless: the store applies a
snapshot only when it is newer than the row.

While the store is down the projector keeps retrying its batch with backoff and the outbox
grows in Redis, where nothing is lost when a daemon dies. How a batch is written (bounded
requests, retries, splitting what the store rejects) is `row_writer`'s. A row another
session holds locked (the store says so: SQLSTATE 55P03, after the function's one-second
lock timeout) is parked (`parked`): its snapshot is kept in Redis before its entries are
acknowledged, so the rest goes on and the outbox is trimmed as usual; this projector
parks that job's new entries too for PARK_S, and the reconciler writes parked rows on
each sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError, ResponseError

from supervisor.aio import sleep_unless
from supervisor.queue.jobqueue import AnyRedis
from supervisor.queue.keys import QueueKeys
from supervisor.queue.records import as_str
from supervisor.redis_retry import TRANSIENT, why
from supervisor.status.backend import StatusBackend
from supervisor.status.outbox import GROUP, BadEntry, OutboxEntry, parse_entry
from supervisor.status.parked import ParkedRows
from supervisor.status.reporting import ProjectorHooks, ProjectorStats
from supervisor.status.row_writer import RowWriter
from supervisor.status.update import StatusUpdate, newest_per_job

log = logging.getLogger(__name__)

# A consumer name idle this long that holds nothing is a daemon's that is gone (killed, or
# stopped while the store was down): forgotten, so the group does not grow with restarts.
# Far longer than a live projector is ever idle (it reads every half second).
FORGET_IDLE_S = 3600.0
# How long a projector parks a parked job's new entries without trying them (each try of a
# batch holding a locked row costs a lock timeout per halving).
PARK_S = 10.0


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
        self.hooks = hooks or ProjectorHooks()
        self.stats = ProjectorStats()
        self.writer = RowWriter(
            backend,
            self.hooks,
            self.stats,
            request_timeout_s=request_timeout_s,
            retry_initial_s=retry_initial_s,
            retry_max_s=retry_max_s,
        )
        self._group_ready = False
        self._stopping = asyncio.Event()
        self._parked_until: dict[str, float] = {}  # job -> monotonic end of its parking
        self.parked = ParkedRows(client, keys)

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
        """Entries after `last_id` (">": new ones), as (id, fields). Only a read of this
        consumer's own pending entries can meet one without fields."""
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
            out.extend(entries)
        # A pending entry deleted meanwhile (XDEL, XTRIM) comes back without fields: nothing
        # to write, so it is acknowledged, and the read goes on past it.
        gone = [eid for eid, fields in out if not fields]
        if gone:
            await self._ack(gone)
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
        # Ids whose entries were trimmed or deleted meanwhile: nothing to write, just forget
        # them. Redis 7 lists them apart; Redis 6 hands them over to this consumer as nil,
        # without even their ids, so its own pending entries are read for them.
        deleted = list(reply[2]) if len(reply) > 2 else []
        if deleted:
            await self._ack(deleted)
        if any(eid is None for eid, _fields in reply[1]):
            await self._forget_own_deleted()
        self.stats.claimed += len(entries)
        return entries

    async def _park(self, rows: list[StatusUpdate], found_locked: set[str]) -> None:
        """Hand rows to the reconciler (before their entries are acknowledged). A job whose
        row was just found locked is parked for PARK_S from now; one parked already keeps
        its end, so a job reporting more often than PARK_S is still tried again then."""
        await self.parked.park(rows)
        until = time.monotonic() + PARK_S
        for job_id in {row.job_id for row in rows}:
            if job_id not in self._parked_until:
                self.stats.parked += 1
                self._parked_until[job_id] = until
            elif job_id in found_locked:
                self._parked_until[job_id] = until

    async def _ack(self, ids: Sequence[str]) -> None:
        if ids:
            await self.client.xack(self.keys.status_outbox, GROUP, *ids)

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
        parked = {e.row.job_id for e in entries if e.row.job_id in self._parked_until}
        rows = [e.row for e in entries if e.row.job_id not in parked]
        self.writer.locked = set()
        if rows and not await self.writer.write(newest_per_job(rows)):
            return False
        stuck = parked | self.writer.locked
        if stuck:
            rows_held = newest_per_job([e.row for e in entries if e.row.job_id in stuck])
            await self._park(rows_held, found_locked=self.writer.locked)
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
                log.warning("status projector: Redis unavailable (%s); retrying", why(exc))
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
            page = await self._read(after, None)
            if not page:
                return True
            if not await self.project([(eid, fields) for eid, fields in page if fields]):
                return False
            after = as_str(page[-1][0])

    async def _forget_own_deleted(self) -> None:
        """Acknowledge this consumer's pending entries that were deleted meanwhile (reading
        them does that), leaving the others pending as they are."""
        after = "0"
        while page := await self._read(after, None):
            after = as_str(page[-1][0])

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
        self.writer.give_up_at = time.monotonic() + deadline_s
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
            log.warning("status projector: Redis unavailable at shutdown (%s)", why(exc))
            return False
        except RedisError as exc:  # NOPERM or MISCONF, say: the rows stay for the others
            log.warning("status projector: Redis refused at shutdown (%s)", why(exc))
            return False
