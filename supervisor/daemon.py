"""The daemon: N slots claiming and running jobs, upkeep loops, and a two-phase shutdown.

Signal handlers only set events; the main coroutine acts on them. SIGTERM/SIGINT stops
claiming at once, gives running jobs the shutdown grace, then stops their children and
releases the jobs without spending an attempt. A second signal skips the grace.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from supervisor import __version__, stop_signals
from supervisor.aio import first_of
from supervisor.execution import JobExecution
from supervisor.execution_context import ExecutionContext
from supervisor.metricdefs import run_queue_gauge_refresher
from supervisor.queue.jobqueue import Claim, JobQueue
from supervisor.queue.redaction import secret_values
from supervisor.queue.workers import WorkerRegistry
from supervisor.redis_ready import wait_for_redis
from supervisor.redis_retry import TRANSIENT, why
from supervisor.runner import EndReason, StartFailureGate
from supervisor.runner.containment import ORPHANS
from supervisor.sdnotify import SystemdNotifier
from supervisor.status.service import StatusService
from supervisor.stop_tail import STOP_TAIL_S, run_stop_tail
from supervisor.unrun import fail_unrun, give_back, give_back_in_flight, unrunnable_reason
from supervisor.upkeep import beat_forever, feed_watchdog, pass_on_cancels, reap_forever

log = logging.getLogger(__name__)
# A stop's budget after the children's kill grace for their outcomes' writes (what comes
# after the last one has STOP_TAIL_S).
SETTLE_AFTER_KILL_S = 10.0
# How long a cancelled slot waits for its job's child to be killed and reaped.
KILL_WAIT_S = 35.0
# After a second SIGTERM, settling writes give up this long after the children's kill
# grace (a child that ignores SIGTERM is still given it before SIGKILL).
FORCED_SETTLE_S = 2.0
# Tenants whose jobs completed this recently count as known to the start-failure gate
# when a daemon starts.
KNOWN_TENANTS_WINDOW_S = 24 * 3600.0


class Daemon:
    def __init__(
        self,
        ctx: ExecutionContext,
        *,
        concurrency: int,
        shutdown_grace_s: float,
        heartbeat_ttl_s: float,
        instance: int | None,
        metrics_port: int,
        notifier: SystemdNotifier,
        status: StatusService | None = None,
    ) -> None:
        self.ctx = ctx
        self.queue: JobQueue = ctx.queue
        self.concurrency = concurrency
        self.shutdown_grace_s = shutdown_grace_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.instance = instance
        self.metrics_port = metrics_port
        self.notifier = notifier
        self.status = status
        self.registry = WorkerRegistry(ctx.queue.client, ctx.queue.keys)
        # Jobs held: a child running, or its outcome still being written.
        self.active: dict[str, JobExecution] = {}
        # Every job's task, from its start until its outcome is written.
        self._jobs: set[asyncio.Task[None]] = set()
        self.slots: list[asyncio.Task[None] | None] = [None] * concurrency
        self._slot_started: dict[int, float] = {}
        self._slot_pause: dict[int, float] = {}
        self.stopping = asyncio.Event()
        self.forced = asyncio.Event()
        self.gate = ctx.gate
        self.started_at = time.time()

    # ---- signals ------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        # SIGHUP too: an operator's "reload" (`supervisorctl signal HUP`) stops gracefully
        # rather than killing it; supervisord starts it again (systemd, with
        # Restart=on-failure, does not: there it is `systemctl restart`).
        for sig in stop_signals.STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        for early in stop_signals.received()[:2]:  # came while the daemon started
            self._on_signal(early)

    def _on_signal(self, sig: int) -> None:
        if self.stopping.is_set():
            log.warning("second %s: stopping running jobs now", signal.Signals(sig).name)
            self.forced.set()
            self.ctx.settle_by.bring_forward(
                time.monotonic() + self.ctx.kill_grace_s + FORCED_SETTLE_S
            )
        else:
            log.info(
                "%s: no new jobs; %d running get %.0fs to finish",
                signal.Signals(sig).name,
                self.busy_slots,
                self.shutdown_grace_s,
            )
            self.stopping.set()

    # ---- slots --------------------------------------------------------------------

    async def _next_claim(self, token: str) -> Claim | None:
        """A claim, or None when stopping. Blocks on the wake list, never polls; only the
        wait is ever cancelled, never the claim script, so no claim is lost in flight."""
        got = await self.queue.try_claim(self.ctx.worker_id, self.ctx.lease_s, token=token)
        if isinstance(got, Claim):
            return got
        block = 5.0 if got is None else min(5.0, max(got, 0.001))
        await first_of(self.queue.wait_for_work(block), self.stopping.wait())
        return None

    async def _slot(self, index: int) -> None:
        pause = 0.1
        # Kept across a claim that failed in flight: sent again, it gets the job the first
        # one may have taken rather than a second.
        token = secrets.token_hex(16)
        # The last job's task: its child has ended and its outcome may still be being
        # written while this slot claims and starts the next job. The job before it is
        # always written by then, so a slot has at most two outcomes in flight.
        last: asyncio.Task[None] | None = None
        in_flight = False  # a claim failed in flight: it may have taken a job under `token`
        while not self.stopping.is_set():
            # Only a closed gate is worth two tasks; an open one is the common case and sits
            # between every wake-up and its claim.
            if self.gate.remaining_s > 0:
                await first_of(self.gate.wait(), self.stopping.wait())
                if self.stopping.is_set():
                    break
            try:
                claim = await self._next_claim(token)
            except TRANSIENT as exc:
                in_flight = True
                log.warning(
                    "slot %d: Redis unavailable (%s); retrying in %.1fs", index, why(exc), pause
                )
                await first_of(asyncio.sleep(pause), self.stopping.wait())
                pause = min(pause * 2, 5.0)
                continue
            except Exception:
                # A claim reply this code cannot read must not end the slot (nor be taken
                # again: its job's lease runs out and the reaper returns it).
                token = secrets.token_hex(16)
                log.exception("slot %d: claim failed; retrying in %.1fs", index, pause)
                await first_of(asyncio.sleep(pause), self.stopping.wait())
                pause = min(pause * 2, 5.0)
                continue
            pause = 0.1
            token = secrets.token_hex(16)
            in_flight = False
            if claim is None:
                continue
            if self.stopping.is_set():  # the claim was in flight when the stop came
                await give_back(self.ctx, self.queue, index, claim)
                break
            try:
                job = await self._run_claim(index, claim)
            except Exception:
                # _run_claim fails the job itself; this only guards the slot against a bug
                # there (the job's lease then runs out and the reaper recovers it).
                log.exception("slot %d: job %s was not started", index, claim.job.job_id)
                job = None
            if last is not None:
                await asyncio.wait({last})
            last = job
        if in_flight:
            await give_back_in_flight(self.ctx, self.queue, index, token)

    async def _run_claim(self, index: int, claim: Claim) -> asyncio.Task[None] | None:
        """Start one claimed job at once and return when its child has ended, with the task
        still writing its outcome (in `_jobs` until done; None if there is none). Whatever
        goes wrong fails that job with a logged reason (not retryable when the payload is
        the cause); it never ends the slot."""
        job_id = claim.job.job_id
        payload_secrets = secret_values(claim.payload, self.ctx.is_secret)
        reason = unrunnable_reason(claim, self.ctx.is_secret, payload_secrets)
        if reason is not None:
            await fail_unrun(self.ctx, self.queue, index, claim, reason, retryable=False)
            return None
        try:
            execution = JobExecution(self.ctx, claim, payload_secrets)
        except Exception as exc:
            log.exception("slot %d: job %s could not be prepared", index, job_id)
            reason = f"Supervisor could not prepare the job: {type(exc).__name__}"
            await fail_unrun(self.ctx, self.queue, index, claim, reason, retryable=False)
            return None
        self.active[job_id] = execution
        self._slots_changed()
        task = asyncio.create_task(self._execute(index, execution), name=f"job:{job_id}")
        self._jobs.add(task)
        task.add_done_callback(self._job_done)
        try:
            await asyncio.wait({task, execution.child_ended}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # A cancelled slot stops its child and ends once it is reaped, as run_child
            # does when cancelled: a slot started in its place never runs beside it.
            task.cancel()
            await asyncio.wait({task}, timeout=KILL_WAIT_S)
            raise
        self._slots_changed()
        return task

    async def _execute(self, index: int, execution: JobExecution) -> None:
        """One job's execution to its written outcome."""
        claim, job_id = execution.claim, execution.job_id
        try:
            await execution.run()
        except Exception as exc:
            log.exception("slot %d: job %s crashed its execution", index, job_id)
            execution.stop.request(EndReason.SHUTDOWN)
            reason = f"Supervisor error while running the job: {type(exc).__name__}"
            await fail_unrun(self.ctx, self.queue, index, claim, reason, retryable=True)
        finally:
            # Only this run: the same job claimed again meanwhile (its lease lost and the
            # job returned by the reaper) is another execution under the same id.
            if self.active.get(job_id) is execution:
                del self.active[job_id]
            self._slots_changed()

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def _start_slot(self, index: int) -> None:
        self._slot_started[index] = time.monotonic()
        task = asyncio.create_task(self._slot(index), name=f"slot-{index}")
        task.add_done_callback(lambda t: self._slot_ended(index, t))
        self.slots[index] = task

    def _slot_ended(self, index: int, task: asyncio.Task[None]) -> None:
        """A slot task only ends when the daemon stops; one that ends otherwise is logged
        with its cause and started again, so the daemon keeps every slot it reports."""
        if self.stopping.is_set() or self.slots[index] is not task:
            return
        cause = None if task.cancelled() else task.exception()
        # A slot that ends again at once is restarted after a growing pause (at most 30 s),
        # not in a tight loop that floods the log.
        now = time.monotonic()
        quick = now - self._slot_started.get(index, 0.0) < 5.0
        pause = min(30.0, self._slot_pause.get(index, 0.5) * 2) if quick else 0.0
        self._slot_pause[index] = pause or 0.5
        log.error(
            "slot %d ended unexpectedly (%r); restarting it in %.1fs",
            index,
            cause,
            pause,
            exc_info=cause,
        )
        asyncio.get_running_loop().call_later(pause, self._restart_slot, index, task)

    def _restart_slot(self, index: int, ended: asyncio.Task[None]) -> None:
        if not self.stopping.is_set() and self.slots[index] is ended:
            self._start_slot(index)

    @property
    def live_slots(self) -> int:
        return sum(1 for t in self.slots if t is not None and not t.done())

    @property
    def busy_slots(self) -> int:
        """Slots whose job's child is running (a job whose outcome is being written no
        longer takes one)."""
        return sum(1 for e in self.active.values() if not e.child_ended.done())

    def _slots_changed(self) -> None:
        busy = self.busy_slots
        live = self.live_slots
        if self.ctx.metrics is not None:
            self.ctx.metrics.set_slots(busy=busy, idle=max(0, live - busy))
        self.notifier.status(f"{busy}/{live} slots busy")

    # ---- upkeep -------------------------------------------------------------------

    def heartbeat_info(self) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "instance": self.instance,
            "slots": self.live_slots,
            "busy": self.busy_slots,
            "active": sorted(self.active),
            "version": __version__,
            "started": self.started_at,
            "metrics_port": self.metrics_port,
            "queue": self.queue.queue,
            "stopping": self.stopping.is_set(),
            # Pauses of every slot in a row since a child last ended normally: children
            # that cannot start (a deploy removed the worker, no fork server, no room).
            "spawn_pauses": self.gate.pauses_in_a_row(),
        }

    # ---- life ---------------------------------------------------------------------

    async def _seed_gate(self) -> None:
        """Tell the start-failure gate which tenants' jobs the queue completed in the last
        day (one entry per tenant), so that a daemon that has just started does not take
        one tenant's crashing jobs for a broken deploy (see StartFailureGate)."""
        try:
            async with asyncio.timeout(5):
                tenants = await self.queue.recent_tenants(
                    StartFailureGate.TENANTS_FOR_A_DEPLOY, within_s=KNOWN_TENANTS_WINDOW_S
                )
        except Exception as exc:  # optional knowledge: Redis away, a cluster failover, ACLs
            log.warning("recent tenants not read (%r); the gate starts knowing none", exc)
            return
        self.gate.seen_ending_normally(tenants)

    async def run(self, on_ready: Callable[[], None] | None = None) -> int:
        self.install_signal_handlers()
        await wait_for_redis(self.queue, self.stopping)
        if self.stopping.is_set():
            return 0
        # Before any upkeep: the first heartbeat must already see the slots started.
        await self._seed_gate()
        if self.stopping.is_set():
            return 0
        ctx = self.ctx
        upkeep = [
            asyncio.create_task(reap_forever(self.queue, ctx.lease_s, ctx.metrics), name="reaper"),
            asyncio.create_task(
                beat_forever(
                    self.registry,
                    ctx.worker_id,
                    self.heartbeat_info,
                    self.heartbeat_ttl_s,
                    self.queue,
                    ctx.lease_checks,
                ),
                name="heartbeat",
            ),
            asyncio.create_task(pass_on_cancels(self.queue, self.active), name="cancels"),
            asyncio.create_task(feed_watchdog(self.notifier), name="watchdog"),
        ]
        if self.status is not None:
            self.status.start()
        if ORPHANS.become_subreaper(kill_unattributed=True):  # it starts no other children
            # Jobs' escaped descendants are reparented here rather than to init.
            upkeep.append(asyncio.create_task(ORPHANS.run_periodically(1.0), name="orphans"))
        if self.ctx.metrics is not None:
            upkeep.append(asyncio.create_task(run_queue_gauge_refresher(self.queue, 10.0)))
        for i in range(self.concurrency):
            self._start_slot(i)
        self._slots_changed()
        if on_ready is not None:
            on_ready()
        self.notifier.ready()
        log.info(
            "ready: worker %s, queue %s, %d slots",
            self.ctx.worker_id,
            self.queue.queue,
            self.concurrency,
        )
        await self.stopping.wait()
        await self._drain(self.slots)
        await run_stop_tail(upkeep, self.registry, self.ctx, self.status)
        log.info("stopped")
        return 0

    async def _drain(self, slots: list[asyncio.Task[None] | None]) -> None:
        self.notifier.stopping()
        kill_budget = self.ctx.kill_grace_s + SETTLE_AFTER_KILL_S
        # And a few seconds to close the connections and the fork server after the tail.
        self.notifier.extend_timeout(self.shutdown_grace_s + kill_budget + STOP_TAIL_S + 5.0)
        deadline = time.monotonic() + self.shutdown_grace_s
        # Settling writes (Redis down) give up within the budget told to systemd, not at
        # each job's lease deadline.
        self.ctx.settle_by.bring_forward(deadline + kill_budget)
        forced = asyncio.create_task(self.forced.wait())
        while not self.forced.is_set():
            # The slots, and the jobs whose outcomes are still being written.
            pending = {t for t in (*slots, *self._jobs) if t is not None and not t.done()}
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                break
            await asyncio.wait(
                {*pending, forced}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
        forced.cancel()
        if self.busy_slots:
            log.warning(
                "shutdown grace over: stopping %d running job(s) and releasing them",
                self.busy_slots,
            )
            for execution in list(self.active.values()):
                execution.stop.request(EndReason.SHUTDOWN)
        await asyncio.gather(*(t for t in slots if t is not None), return_exceptions=True)
        await asyncio.gather(*self._jobs, return_exceptions=True)
