"""The verbs of a lease holder: renew, progress, and the outcome (complete, fail, release,
cancel acknowledged).

Each is one Lua script fenced by the claim's token: a holder whose lease was lost or taken
over changes nothing, and the script says so (False, or the fail outcome 'lost').
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Literal

from supervisor.queue.keys import QueueKeys
from supervisor.queue.payload import strict_json
from supervisor.queue.records import Backoff, FailResult, RenewResult, Retention
from supervisor.queue.records import as_str as _s

Released = Literal["released", "cancelled"]

# Tenants remembered in the completed-tenants set (one entry each, the newest kept).
COMPLETED_TENANTS_KEPT = 100


class HolderVerbs:
    """Mixed into `JobQueue`, which provides the keys, the retention, the backoff and the
    script runner."""

    keys: QueueKeys
    retention: Retention
    backoff: Backoff

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        raise NotImplementedError

    async def renew(self, job_id: str, token: str, lease_s: float) -> RenewResult:
        k = self.keys
        held, cancel, until = await self._run(
            "renew", [k.jobs, k.active], [job_id, token, int(lease_s * 1000)]
        )
        return RenewResult(bool(int(held)), bool(int(cancel)), int(until) / 1000.0 or None)

    async def progress(
        self, job_id: str, token: str, pct: float, message: str | None, *, row: bool = True
    ) -> bool:
        """Record a held job's progress; `row` False leaves it out of the status outbox
        (the holder's throttle: the next row carries it)."""
        k = self.keys
        # Progress comes from child output: an infinite value made the script fail in
        # cjson.encode, and the status table reads 0-100. NaN counts as no progress.
        pct = min(100.0, max(0.0, float(pct))) if math.isfinite(pct) else 0.0
        ok, _rev = await self._run(
            "progress",
            [k.jobs, k.events, k.status_outbox],
            [
                job_id,
                token,
                repr(pct),
                message or "",
                self.retention.events_maxlen,
                self.retention.outbox_cap,
                "1" if row else "0",
            ],
        )
        return bool(int(ok))

    async def complete(
        self,
        job_id: str,
        token: str,
        result: Any = None,
        *,
        message: str | None = None,
        peak_rss_bytes: int | None = None,
    ) -> bool:
        """Mark a held job completed; `message` is the child's last progress message."""
        k = self.keys
        ok, _rev = await self._run(
            "complete",
            [
                k.jobs,
                k.payloads,
                k.active,
                k.completed,
                k.events,
                k.status_outbox,
                k.completed_tenants,
            ],
            [
                job_id,
                token,
                "" if result is None else _result_json(result),
                int(self.retention.keep_completed_s * 1000),
                self.retention.events_maxlen,
                self.retention.trim_limit,
                self.retention.outbox_cap,
                message or "",
                "" if peak_rss_bytes is None else int(peak_rss_bytes),
                COMPLETED_TENANTS_KEPT,
            ],
        )
        return bool(int(ok))

    async def fail(
        self,
        job_id: str,
        token: str,
        error: str,
        *,
        retryable: bool,
        attempt: int,
        peak_rss_bytes: int | None = None,
    ) -> FailResult:
        """Record a failed attempt; `attempt` (1-based) picks the backoff delay. A job whose
        cancel was requested is not retried but ends cancelled (outcome 'cancelled')."""
        k = self.keys
        outcome, rev, due = await self._run(
            "fail",
            [
                k.jobs,
                k.payloads,
                k.active,
                k.delayed,
                k.failed,
                k.wake,
                k.events,
                k.status_outbox,
                k.cancelled,
            ],
            [
                job_id,
                token,
                error[:1000],
                "1" if retryable else "0",
                int(self.backoff.delay_s(attempt) * 1000),
                int(self.retention.keep_failed_s * 1000),
                self.retention.events_maxlen,
                self.retention.trim_limit,
                self.retention.outbox_cap,
                "" if peak_rss_bytes is None else int(peak_rss_bytes),
            ],
        )
        due_s = int(due) / 1000.0
        return FailResult(_s(outcome), due_s if due_s else None, int(rev))

    async def release(self, job_id: str, token: str) -> Released | None:
        """Give the job back unspent: 'released', or 'cancelled' when its cancel was
        requested (it ends now); None when the lease is lost."""
        k = self.keys
        outcome, _rev = await self._run(
            "release",
            [k.jobs, k.active, k.waiting, k.seq, k.wake, k.events, k.status_outbox, k.cancelled],
            [job_id, token, self.retention.events_maxlen, self.retention.outbox_cap],
        )
        done = _s(outcome)
        return None if not done else "cancelled" if done == "cancelled" else "released"

    async def ack_cancel(
        self, job_id: str, token: str, *, peak_rss_bytes: int | None = None
    ) -> bool:
        k = self.keys
        ok, _rev = await self._run(
            "cancel_ack",
            [k.jobs, k.active, k.cancelled, k.events, k.status_outbox],
            [
                job_id,
                token,
                self.retention.events_maxlen,
                self.retention.outbox_cap,
                "" if peak_rss_bytes is None else int(peak_rss_bytes),
            ],
        )
        return bool(int(ok))


def _result_json(result: Any) -> bytes:
    """The result as stored: UTF-8 text as itself (one `\\uXXXX` escape per character,
    escaped again inside the job record, would take up to 7 bytes per byte of a RESULT
    line). A value only lenient JSON holds (NaN, a lone surrogate; the runner never sends
    one) is stored with ASCII escapes; the status projector copes with it."""
    try:
        return strict_json(result)
    except ValueError:
        return json.dumps(result, separators=(",", ":")).encode()
