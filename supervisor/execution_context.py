"""What every job execution of one daemon shares: its settings and queue, the counts of
fork-server deaths and host faults per job, the start-failure gate, and the wake-up for
lease checks."""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from supervisor.aio import first_of
from supervisor.queue.jobqueue import JobQueue
from supervisor.queue.redaction import SecretKeys
from supervisor.runner import RunnerConfig, StartFailureGate
from supervisor.sinks import SinkFanout

log = logging.getLogger(__name__)

# The fork server dying under a job costs it no attempt this many times (in one daemon);
# after that each death counts as a failed attempt. A child can kill the server (its
# parent, same user): without the bound such a job would interrupt its neighbours for ever.
FREE_SERVER_LOSSES = 2
# A job that could not start for this host's reason (no room for its directory) goes back
# to the queue unspent this many times (in one daemon); after that it fails like any start
# failure, with backoff, so a host that stays broken (a full disk, a missing directory, an
# unknown child user) neither cycles a job for ever nor hides the trouble.
FREE_HOST_FAULTS = 2


class PerJobCounts:
    """How often something happened to each job id, in this daemon (bounded)."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._counts: dict[str, int] = {}

    def add(self, job_id: str) -> int:
        """Count one more under `job_id`; how many there have been."""
        count = self._counts.pop(job_id, 0) + 1
        self._counts[job_id] = count  # now the newest
        if len(self._counts) > self._limit:
            del self._counts[next(iter(self._counts))]
        return count


class LeaseChecks:
    """Wakes every running job's lease renewal at once. A new Redis server (a restart or
    failover) may have lost the last writes before it, a claim among them: a lease can be
    gone, and its job claimed elsewhere, long before the next renewal was due."""

    def __init__(self) -> None:
        self._now = asyncio.Event()
        self._server = ""  # the Redis server's run id last seen

    def request(self) -> None:
        event, self._now = self._now, asyncio.Event()
        event.set()

    def saw_server(self, run_id: str) -> None:
        """The queue's Redis server answered with this run id (empty: unknown); a new one
        after a known one requests a check of every lease."""
        if self._server and run_id and run_id != self._server:
            log.warning(
                "Redis answers from a new server (restarted or failed over: run id %s, was "
                "%s); every running job checks its lease now",
                run_id[:12],
                self._server[:12],
            )
            self.request()
        self._server = run_id or self._server

    async def wait(self, done: asyncio.Event, seconds: float) -> None:
        """Up to `seconds`; less once a check is requested or `done` is set."""
        await first_of(asyncio.sleep(seconds), done.wait(), self._now.wait())


class SettleDeadline:
    """The monotonic time by which settling writes give up, once the daemon stops (None
    until then: each job's lease deadline alone). The lease brings back a job they could
    not settle."""

    def __init__(self) -> None:
        self.at: float | None = None

    def bring_forward(self, at: float) -> None:
        self.at = at if self.at is None else min(self.at, at)


@dataclass(frozen=True)
class ExecutionContext:
    """What every job execution of one daemon shares."""

    queue: JobQueue
    sinks: SinkFanout
    runner: RunnerConfig
    worker_id: str
    lease_s: float
    job_timeout_s: float
    max_job_timeout_s: float
    kill_grace_s: float
    secret_keys: frozenset[str]  # payload keys whose values never leave the daemon
    metrics: Any = None  # supervisor.metrics.DaemonMetrics when metrics are on
    server_losses: PerJobCounts = field(default_factory=PerJobCounts)  # the fork server died
    host_faults: PerJobCounts = field(default_factory=PerJobCounts)  # could not start here
    # Pauses every slot's spawns after start failures (the daemon's slots wait on it).
    gate: StartFailureGate = field(default_factory=StartFailureGate)
    lease_checks: LeaseChecks = field(default_factory=LeaseChecks)
    # When the daemon stops: the time by which settling writes give up.
    settle_by: SettleDeadline = field(default_factory=SettleDeadline)

    @functools.cached_property
    def is_secret(self) -> SecretKeys:
        return SecretKeys(self.secret_keys)
