"""The verbs an operator runs on jobs they do not hold: cancel, retry and purge.

Used by `ingestctl` and the HTTP API. Each is one Lua script (purge one per batch), like
every other state change of the queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from supervisor.queue.keys import QueueKeys
from supervisor.queue.payload import validate_job_id
from supervisor.queue.records import Retention
from supervisor.queue.records import as_str as _s
from supervisor.queue.states import JobState

PURGE_BATCH = 500


class OperatorVerbs:
    """Mixed into `JobQueue`, which provides the keys, the retention and the script runner."""

    keys: QueueKeys
    retention: Retention

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        raise NotImplementedError

    async def cancel(self, job_id: str, *, tenant: str | None = None) -> str:
        """'cancelled' (was waiting/delayed), 'requested' (active: holder told), else the
        job's final state or 'missing' (also a job of another tenant than `tenant`, checked
        in the same script as the change)."""
        validate_job_id(job_id)
        k = self.keys
        outcome, _rev = await self._run(
            "cancel",
            [k.jobs, k.waiting, k.delayed, k.active, k.cancelled, k.events, k.status_outbox],
            [
                job_id,
                k.cancel_channel,
                self.retention.events_maxlen,
                self.retention.outbox_cap,
                tenant or "",
            ],
        )
        return _s(outcome)

    async def retry(self, job_id: str, *, tenant: str | None = None) -> str:
        """'requeued' when queued again (or a pending cancel of a waiting job was taken
        back); else the current state ('waiting': nothing to do; others: not retryable)
        or 'missing' (also a job of another tenant than `tenant`)."""
        validate_job_id(job_id)
        k = self.keys
        outcome, _rev = await self._run(
            "retry",
            [k.jobs, k.failed, k.cancelled, k.waiting, k.seq, k.wake, k.events, k.status_outbox],
            [job_id, self.retention.events_maxlen, self.retention.outbox_cap, tenant or ""],
        )
        return _s(outcome)

    async def purge(self, state: JobState | str) -> int:
        """Remove every job in `state` (not active), in batches; how many were removed."""
        state = JobState(state)
        if state is JobState.ACTIVE:
            raise ValueError("active jobs cannot be purged: cancel them instead")
        k = self.keys
        zset = k.all_state_sets()[state.value]
        total = 0
        while True:
            n = int(
                await self._run(
                    "purge",
                    [k.jobs, k.payloads, zset, k.status_outbox],
                    [PURGE_BATCH, self.retention.outbox_cap],
                )
            )
            total += n
            if n < PURGE_BATCH:
                return total
