"""The daemon's status duties: project the outbox, reconcile now and then, keep the outbox
trimmed and report its length and age. With the `none` backend only the trimming runs: an
outbox no projector reads is emptied, so it does not grow."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from supervisor.aio import join_bounded, sleep_unless
from supervisor.queue.jobqueue import JobQueue
from supervisor.redis_retry import TRANSIENT, why
from supervisor.status.backend import NoneBackend, StatusBackend, StatusStoreError
from supervisor.status.parked import write_parked
from supervisor.status.projector import StatusProjector
from supervisor.status.reconcile import sweep_page, take_lock
from supervisor.status.reporting import ProjectorHooks
from supervisor.status.trim import OutboxState, outbox_state, trim_outbox

log = logging.getLogger(__name__)


class StatusService:
    def __init__(
        self,
        queue: JobQueue,
        backend: StatusBackend,
        *,
        consumer: str,
        reconcile_interval_s: float = 30.0,
        reconcile_page: int = 1000,
        claim_idle_s: float = 15.0,
        hooks: ProjectorHooks | None = None,
    ) -> None:
        self.queue = queue
        self.backend = backend
        self.consumer = consumer
        self.reconcile_interval_s = reconcile_interval_s
        self.reconcile_page = reconcile_page
        self.hooks = hooks or ProjectorHooks()
        self.projector: StatusProjector | None = None
        if not isinstance(backend, NoneBackend):
            self.projector = StatusProjector(
                queue.client,
                queue.keys,
                backend,
                consumer=consumer,
                claim_idle_s=claim_idle_s,
                hooks=self.hooks,
            )
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self.projector is not None:
            self._tasks.append(asyncio.create_task(self.projector.run(), name="status-projector"))
            self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="status-reconcile"))
        self._tasks.append(asyncio.create_task(self._trim_loop(), name="status-outbox-trim"))

    async def _pause(self, seconds: float) -> None:
        await sleep_unless(self._stopping, seconds)

    async def _reconcile_loop(self) -> None:
        while not self._stopping.is_set():
            await self._pause(self.reconcile_interval_s)
            if self._stopping.is_set():
                return
            try:
                if not await take_lock(self.queue, self.consumer, self.reconcile_interval_s * 0.9):
                    continue
                async with asyncio.timeout(max(30.0, self.reconcile_interval_s)):
                    # Parked rows whatever the outbox holds: rows get parked when it is busy.
                    await write_parked(self.queue, self.backend)
                    state = await outbox_state(self.queue.client, self.queue.keys.status_outbox)
                    if state.unprojected > self.reconcile_page:
                        # Rows lag because the outbox is still being written: not lost.
                        log.debug("reconcile sweep skipped: %d rows to project", state.unprojected)
                        continue
                    await sweep_page(self.queue, self.backend, limit=self.reconcile_page)
            except TRANSIENT as exc:
                log.debug("reconcile sweep skipped: %s", why(exc))
            except StatusStoreError as exc:
                if exc.permanent:
                    log.exception(
                        "reconcile sweep failed; next one in %.0fs", self.reconcile_interval_s
                    )
                else:  # a store restart, a pooler failover: the next sweep tries again
                    log.warning(
                        "reconcile sweep cut short (%s); next one in %.0fs",
                        exc,
                        self.reconcile_interval_s,
                    )
            except Exception:
                log.exception(
                    "reconcile sweep failed; next one in %.0fs", self.reconcile_interval_s
                )

    async def _trim_loop(self) -> None:
        stream = self.queue.keys.status_outbox
        while not self._stopping.is_set():
            try:
                if self.projector is not None:
                    # Never judge the stream reader-less while our group is still to come.
                    await self.projector.ensure_group()
                read_at_ms = await self.queue.server_time_ms()
                state: OutboxState = await outbox_state(self.queue.client, stream)
                state = dataclasses.replace(state, read_at_ms=read_at_ms)
                if self.projector is not None and not state.has_group:
                    # The group vanished (Redis restarted empty): make it again, never trim
                    # what it has not read.
                    self.projector.forget_group()
                else:
                    with contextlib.suppress(Exception):
                        self.hooks.on_outbox(state)
                    await trim_outbox(self.queue.client, stream, state)
                    # Rows held back by a lock leave the outbox: their wait shows only here.
                    parked = int(await self.queue.client.hlen(self.queue.keys.status_parked_rows))
                    with contextlib.suppress(Exception):
                        self.hooks.on_parked(parked)
            except TRANSIENT as exc:
                log.debug("outbox trim skipped: %s", why(exc))
            except Exception:
                log.exception("outbox trim failed")
            await self._pause(5.0)

    async def aclose(self, deadline_s: float) -> None:
        """Stop; a projector first writes what is left within `deadline_s`. What it could
        not write stays in the outbox for the other daemons."""
        end = time.monotonic() + deadline_s
        self._stopping.set()
        if self.projector is not None:
            self.projector.stop()
        await asyncio.gather(*(join_bounded(task, 2.0) for task in self._tasks))
        left = max(0.1, end - time.monotonic())
        if self.projector is not None and not await self.projector.drain(left):
            log.warning(
                "status rows not all written before shutdown; they stay in the outbox "
                "and another daemon writes them"
            )
        try:  # a second at least: closing a connection that answers is quick
            await asyncio.wait_for(self.backend.aclose(), max(1.0, end - time.monotonic()))
        except Exception:
            log.exception("status backend did not close cleanly")
