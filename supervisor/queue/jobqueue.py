"""The Redis job protocol: the only code that reads or writes a queue's job keys.

Every state change runs in one Lua script (see `lua/`), so each is atomic; every change a
lease holder makes is fenced by its token, so a holder whose lease was lost or taken over
cannot change the job.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from supervisor.queue.connection import AnyRedis
from supervisor.queue.holder_verbs import HolderVerbs
from supervisor.queue.keys import DEFAULT_QUEUE, QueueKeys
from supervisor.queue.operator_verbs import OperatorVerbs
from supervisor.queue.payload import PayloadError, TenantConflict, validate_payload
from supervisor.queue.reads import QueueReads
from supervisor.queue.records import (
    Backoff,
    Claim,
    EnqueueResult,
    FailResult,
    JobRecord,
    ReapResult,
    RenewResult,
    Retention,
    ScanPage,
    decode_payload,
)
from supervisor.queue.records import as_str as _s
from supervisor.queue.redaction import DEFAULT_SECRET_KEYS, SecretKeys
from supervisor.queue.scripts import SCRIPT_NAMES, run_script, script_source
from supervisor.queue.states import JobState
from supervisor.queue.status_rows import StatusRowVerbs

# The records are part of this module's interface: callers take them from here.
__all__ = [
    "MAX_DELAY_S",
    "WAKE_CAP",
    "AnyRedis",
    "Backoff",
    "Claim",
    "EnqueueResult",
    "FailResult",
    "JobQueue",
    "JobRecord",
    "ReapResult",
    "RenewResult",
    "Retention",
    "ScanPage",
]

# Longest single block on the wake list; a lost wake token costs at most this much latency.
MAX_BLOCK_S = 5.0
# Longest delay of an enqueue (a year): a due time every clock and calendar can show.
MAX_DELAY_S = 365 * 24 * 3600
# Wake tokens the list keeps (the scripts other than enqueue hold the same number: _lib.lua).
WAKE_CAP = 10_000


class JobQueue(QueueReads, HolderVerbs, StatusRowVerbs, OperatorVerbs):
    """One queue's protocol over an asyncio Redis (or Redis Cluster) client."""

    def __init__(
        self,
        client: AnyRedis,
        queue: str = DEFAULT_QUEUE,
        *,
        default_max_attempts: int = 3,
        backoff: Backoff = Backoff(),
        retention: Retention = Retention(),
        secret_keys: Iterable[str] = (),
    ) -> None:
        """`secret_keys`: the deployment's names of secret payload keys besides the
        defaults (INGEST_SECRET_KEYS); enqueue counts the secrets under them."""
        self.client = client
        self.keys = QueueKeys(queue)
        self.queue = queue
        self.is_secret = SecretKeys(DEFAULT_SECRET_KEYS | frozenset(secret_keys))
        self.default_max_attempts = default_max_attempts
        self.backoff = backoff
        self.retention = retention
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await run_script(self._scripts[name], keys, args)

    # ---- producers -------------------------------------------------------------------

    async def enqueue(self, payload: Mapping[str, Any], *, delay_s: float = 0) -> EnqueueResult:
        return (await self.enqueue_many([payload], delay_s=delay_s))[0]

    async def enqueue_many(
        self, payloads: Iterable[Mapping[str, Any]], *, delay_s: float = 0
    ) -> list[EnqueueResult]:
        """Validate every payload first (all or nothing), then store them in one round trip."""
        if (
            isinstance(delay_s, bool)
            or not isinstance(delay_s, int | float)
            or not 0 <= delay_s <= MAX_DELAY_S  # NaN compares false
        ):
            raise PayloadError("delay_s", f"must be a number of seconds from 0 to {MAX_DELAY_S}")
        valid = [validate_payload(p, self.is_secret) for p in payloads]
        seen: set[str] = set()
        for p in valid:
            if p["job_id"] in seen:
                raise PayloadError("job_id", f"{p['job_id']!r} appears twice in one batch")
            seen.add(p["job_id"])
        if not valid:
            return []
        k = self.keys
        r = self.retention
        args: list[Any] = [r.events_maxlen, WAKE_CAP, r.outbox_cap, len(valid)]
        for p in valid:
            named = p.get("max_attempts")
            args += [
                p["job_id"],
                json.dumps(p, separators=(",", ":")),
                p["tenant_id"],
                p["priority"],
                named or self.default_max_attempts,
                "1" if named else "0",
                int(delay_s * 1000),
            ]
        raw = await self._run(
            "enqueue",
            [k.jobs, k.payloads, k.waiting, k.delayed, k.seq, k.wake, k.events, k.status_outbox],
            args,
        )
        if _s(raw[0]) == "tenant_conflict":
            raise TenantConflict(_s(raw[1]))
        return [
            EnqueueResult(
                _s(raw[i]), bool(int(raw[i + 1])), JobState(_s(raw[i + 2])), _s(raw[i + 3])
            )
            for i in range(0, len(raw), 4)
        ]

    # ---- holders ---------------------------------------------------------------------

    async def try_claim(
        self, worker_id: str, lease_s: float, *, token: str | None = None
    ) -> Claim | float | None:
        """One attempt: a Claim, else seconds until the next delayed job is due, else None.
        An attempt that failed in flight is retried with the same `token`: it then gets
        the job the first one took, if it took one."""
        k = self.keys
        token = token or secrets.token_hex(16)
        raw = await self._run(
            "claim",
            [
                k.jobs,
                k.payloads,
                k.waiting,
                k.delayed,
                k.active,
                k.seq,
                k.wake,
                k.events,
                k.cancelled,
                k.status_outbox,
                k.claim_marker(token),
                k.failed,
            ],
            [
                worker_id,
                token,
                int(lease_s * 1000),
                self.retention.events_maxlen,
                100,
                self.retention.outbox_cap,
                self.default_max_attempts,
            ],
        )
        if _s(raw[0]) == "":
            wait_ms = int(raw[1])
            return None if wait_ms < 0 else wait_ms / 1000.0
        payload_json = _s(raw[1], errors="replace")
        payload, error = decode_payload(payload_json)
        return Claim(
            job=JobRecord.from_raw(raw[2]),
            payload=payload,
            payload_json=payload_json,
            token=token,
            payload_error=error,
        )

    async def claim(
        self, worker_id: str, *, lease_s: float, timeout_s: float | None = None
    ) -> Claim | None:
        """Take the next ready job, blocking (no polling) until one is ready or `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            got = await self.try_claim(worker_id, lease_s)
            if isinstance(got, Claim):
                return got
            block = MAX_BLOCK_S if got is None else min(MAX_BLOCK_S, max(got, 0.001))
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                block = min(block, left)
            await self.wait_for_work(block)

    async def wait_for_work(self, timeout_s: float) -> None:
        """Block until a wake token arrives (something was enqueued or became due) or timeout."""
        # A block as long as the client's socket timeout would end in TimeoutError instead of
        # an empty reply (redis-py 8 defaults socket_timeout to 5 s, the same as MAX_BLOCK_S).
        sock = _socket_timeout(self.client)
        if sock is not None:
            timeout_s = min(timeout_s, sock * 0.8)
        try:
            await self.client.blpop([self.keys.wake], timeout=max(timeout_s, 0.001))
        except ResponseError as exc:
            # A master turned replica (a failover) ends every blocked call with UNBLOCKED:
            # the wait is over; the claim that follows meets the new role.
            if not str(exc).startswith("UNBLOCKED"):
                raise

    async def recent_tenants(self, count: int, within_s: float) -> list[str]:
        """Up to `count` tenants whose jobs completed within the last `within_s` seconds,
        the most recent first (each once)."""
        if count <= 0:
            return []
        since = await self.server_time_ms() - int(within_s * 1000)
        raw = await self.client.zrevrangebyscore(
            self.keys.completed_tenants, "+inf", since, start=0, num=count
        )
        return [_s(t, "replace") for t in raw]

    # ---- upkeep and admin -----------------------------------------------------------

    async def reap(self) -> ReapResult:
        k = self.keys
        r = self.retention
        raw = [
            _s(x) if not isinstance(x, int) else x
            for x in await self._run(
                "reap",
                [
                    k.jobs,
                    k.payloads,
                    k.active,
                    k.waiting,
                    k.failed,
                    k.cancelled,
                    k.completed,
                    k.seq,
                    k.wake,
                    k.events,
                    k.stats,
                    k.status_outbox,
                ],
                [
                    r.stall_limit,
                    int(r.keep_completed_s * 1000),
                    int(r.keep_failed_s * 1000),
                    r.events_maxlen,
                    200,
                    r.outbox_cap,
                ],
            )
        ]
        groups: list[list[str]] = [[]]
        for item in raw[:-1]:
            if item == "|":
                groups.append([])
            else:
                groups[-1].append(str(item))
        return ReapResult(groups[0], groups[1], groups[2], int(raw[-1]))


def _socket_timeout(client: AnyRedis) -> float | None:
    kwargs = (
        client.connection_kwargs
        if isinstance(client, RedisCluster)
        else client.connection_pool.connection_kwargs
    )
    # from_url() leaves socket_timeout out and records the effective default under this name.
    name = "socket_timeout" if "socket_timeout" in kwargs else "orig_socket_timeout"
    value = kwargs.get(name)
    return None if value is None else float(value)
