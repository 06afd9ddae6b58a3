"""Every Redis key of a queue, in one place.

All keys of one queue share the hash tag `{queue}` so that every Lua script touches a single
Redis Cluster slot. Job data lives in per-queue hashes (field = job id) rather than one key per
job, so scripts never build a key name from a string: every key they touch arrives in KEYS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_QUEUE = "ingest"
QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
PREFIX = "ingest"


@dataclass(frozen=True)
class QueueKeys:
    queue: str

    def __post_init__(self) -> None:
        if not QUEUE_NAME_RE.fullmatch(self.queue):
            raise ValueError(
                f"queue name {self.queue!r}: must be 1-64 characters of letters, digits, '_.:-'"
            )

    def _key(self, kind: str) -> str:
        return f"{PREFIX}:{{{self.queue}}}:{kind}"

    @property
    def jobs(self) -> str:
        """HASH job_id -> JSON job record (state, attempt, lease, progress, error, result)."""
        return self._key("jobs")

    @property
    def payloads(self) -> str:
        """HASH job_id -> JSON payload as validated at enqueue."""
        return self._key("payloads")

    @property
    def waiting(self) -> str:
        """ZSET job_id scored by priority band then sequence (lowest first)."""
        return self._key("waiting")

    @property
    def delayed(self) -> str:
        """ZSET job_id scored by due time in ms."""
        return self._key("delayed")

    @property
    def active(self) -> str:
        """ZSET job_id scored by lease deadline in ms (what the reaper scans)."""
        return self._key("active")

    @property
    def completed(self) -> str:
        """ZSET job_id scored by finish time in ms (retention)."""
        return self._key("completed")

    @property
    def failed(self) -> str:
        """ZSET job_id scored by finish time in ms (dead letter; retention)."""
        return self._key("failed")

    @property
    def cancelled(self) -> str:
        """ZSET job_id scored by finish time in ms (retention)."""
        return self._key("cancelled")

    @property
    def completed_tenants(self) -> str:
        """ZSET tenant_id scored by when a job of it last completed, in ms; the newest 100
        only (the start-failure gate's memory of which tenants' jobs run)."""
        return self._key("completed_tenants")

    @property
    def seq(self) -> str:
        """STRING counter giving FIFO order within a priority band."""
        return self._key("seq")

    @property
    def wake(self) -> str:
        """LIST of wake-up tokens claimers block on (BLPOP); holds no job data."""
        return self._key("wake")

    @property
    def events(self) -> str:
        """STREAM of job events (capped) for live watchers."""
        return self._key("events")

    @property
    def status_outbox(self) -> str:
        """STREAM of status-row snapshots, appended by every script that changes what a
        job's row shows; read by the projectors' consumer group (never blindly trimmed)."""
        return self._key("status")

    @property
    def health_probe(self) -> str:
        """STRING the API's health checks write (with a short expiry): a Redis that answers
        but refuses writes (a replica, out of memory) cannot take jobs."""
        return self._key("health_probe")

    @property
    def status_reconcile(self) -> str:
        """HASH holding the reconciler's scan cursor over the job hash."""
        return self._key("status:reconcile")

    @property
    def status_parked(self) -> str:
        """SET of jobs an earlier version parked by id (their row was locked); the
        reconciler writes their current rows and empties it. Nothing is added to it."""
        return self._key("status:parked")

    @property
    def status_parked_rows(self) -> str:
        """HASH of status rows the store would not take for now (another session holds the
        row's lock): job id -> "<seq_run> <rev>" and the row as JSON on the next line, the
        newest parked, until the reconciler writes it."""
        return self._key("status:parked_rows")

    @property
    def status_reconcile_lock(self) -> str:
        """STRING with a TTL: the daemon that holds it runs the next reconcile sweep."""
        return self._key("status:reconcile:lock")

    @property
    def cancel_channel(self) -> str:
        """Pub/sub channel on which cancel requests for active jobs are announced."""
        return self._key("cancel")

    @property
    def stats(self) -> str:
        """HASH of monotonic counters (stalled, retried, ...)."""
        return self._key("stats")

    @property
    def workers(self) -> str:
        """ZSET worker_id scored by heartbeat expiry in ms (live workers are those not expired)."""
        return self._key("workers")

    def claim_marker(self, token: str) -> str:
        """STRING: the job a claim with this lease token took, for a while after (a claim
        sent again with the token, its reply lost, gets that job rather than another)."""
        return self._key(f"claim:{token}")

    def worker(self, worker_id: str) -> str:
        """STRING JSON heartbeat of one worker, with a short TTL (written by heartbeat.lua)."""
        return self._key(f"worker:{worker_id}")

    def all_state_sets(self) -> dict[str, str]:
        return {
            "waiting": self.waiting,
            "delayed": self.delayed,
            "active": self.active,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
        }

    @property
    def pattern(self) -> str:
        """SCAN pattern matching every key of this queue (tests and purge of a whole queue)."""
        return f"{PREFIX}:{{{self.queue}}}:*"
