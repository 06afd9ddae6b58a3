"""The Redis job protocol: the only code that reads or writes a queue's job keys.

Every state change runs in one Lua script (see `lua/`), so each is atomic; every change a
lease holder makes is fenced by its token, so a holder whose lease was lost or taken over
cannot change the job.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from supervisor.queue.keys import QueueKeys
from supervisor.queue.payload import PayloadError, TenantConflict, validate_job_id, validate_payload
from supervisor.queue.scripts import SCRIPT_NAMES, script_source
from supervisor.queue.states import FINAL_STATES, JobState

AnyRedis = Redis | RedisCluster
# Longest single block on the wake list; a lost wake token costs at most this much latency.
MAX_BLOCK_S = 5.0
PURGE_BATCH = 500


@dataclass(frozen=True)
class Backoff:
    """Delay before retry `attempt` (1-based): base * factor^(attempt-1), capped, minus jitter."""

    base_s: float = 5.0
    factor: float = 2.0
    cap_s: float = 3600.0
    jitter: float = 0.2  # up to this fraction is subtracted at random, spreading retries out

    def delay_s(self, attempt: int, rand: float | None = None) -> float:
        raw = min(self.cap_s, self.base_s * self.factor ** max(0, attempt - 1))
        r = random.random() if rand is None else rand
        return raw * (1.0 - self.jitter * r)


@dataclass(frozen=True)
class Retention:
    keep_completed_s: float = 3600.0
    keep_failed_s: float = 86400.0  # also applies to cancelled jobs
    stall_limit: int = 2
    events_maxlen: int = 10_000
    trim_limit: int = 100  # jobs dropped per script call, so no call does unbounded work
    # Status outbox bound (entries): progress ticks stop being recorded at the cap, other
    # non-final changes at twice the cap; final states always are. 0: unbounded.
    outbox_cap: int = 200_000


@dataclass(frozen=True)
class JobRecord:
    """A job as stored: its state record plus (where fetched) its payload."""

    job_id: str
    state: JobState
    tenant_id: str
    priority: str
    attempt: int
    max_attempts: int
    stalls: int
    rev: int
    enqueued_at: float
    started_at: float | None
    finished_at: float | None
    due_at: float | None
    lease_until: float | None
    worker_id: str | None
    progress: float
    progress_message: str | None
    error: str | None
    result: Any
    cancel_requested: bool
    payload: dict[str, Any] | None = None

    @classmethod
    def from_raw(cls, raw: str | bytes, payload: str | bytes | None = None) -> JobRecord:
        rec = json.loads(raw)

        def secs(key: str) -> float | None:
            v = rec.get(key)
            return None if v is None else float(v) / 1000.0

        result_raw = rec.get("result")
        return cls(
            job_id=rec["id"],
            state=JobState(rec["state"]),
            tenant_id=rec.get("tenant", ""),
            priority=rec.get("priority", "normal"),
            attempt=int(rec.get("attempt", 0)),
            max_attempts=int(rec.get("max_attempts", 1)),
            stalls=int(rec.get("stalls", 0)),
            rev=int(rec.get("rev", 0)),
            enqueued_at=float(rec.get("enqueued_at", 0)) / 1000.0,
            started_at=secs("started_at"),
            finished_at=secs("finished_at"),
            due_at=secs("due_at"),
            lease_until=secs("lease_until"),
            worker_id=rec.get("worker"),
            progress=float(rec.get("progress", 0)),
            progress_message=rec.get("message"),
            error=rec.get("error"),
            result=None if result_raw is None else json.loads(result_raw),
            cancel_requested=bool(rec.get("cancel_requested", False)),
            payload=None if payload is None else decode_payload(payload)[0],
        )

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["state"] = self.state.value
        return out


def decode_payload(raw: str | bytes) -> tuple[dict[str, Any], str | None]:
    """A stored payload and None, or a stand-in and the reason it cannot be read (a record
    written before validation bounded nesting can be too deep for the decoder)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        reason = "payload: nested too deep to decode"
    except ValueError:
        reason = "payload: not valid JSON"
    else:
        if isinstance(value, dict):
            return value, None
        reason = "payload: not a JSON object"
    return {"unreadable": reason}, reason


@dataclass(frozen=True)
class EnqueueResult:
    job_id: str
    created: bool
    state: JobState
    tenant_id: str  # the stored job's tenant (differs from the request's on an id clash)


@dataclass(frozen=True)
class Claim:
    """A job handed to one holder, with the token that fences its writes."""

    job: JobRecord
    payload: dict[str, Any]
    payload_json: str
    token: str
    payload_error: str | None = None  # why the stored payload could not be decoded


@dataclass(frozen=True)
class RenewResult:
    held: bool
    cancel_requested: bool
    lease_until: float | None


@dataclass(frozen=True)
class FailResult:
    outcome: str  # "retry" | "failed" | "lost"
    retry_at: float | None
    rev: int


@dataclass(frozen=True)
class ReapResult:
    recovered: list[str]
    dead_lettered: list[str]
    cancelled: list[str]
    trimmed: int


@dataclass(frozen=True)
class ScanPage:
    """One bounded look through a state's set: the matches, where to go on, how much was read."""

    jobs: list[JobRecord]
    next_cursor: int | None  # None: the set was read to its end
    examined: int


class JobQueue:
    """One queue's protocol over an asyncio Redis (or Redis Cluster) client."""

    def __init__(
        self,
        client: AnyRedis,
        queue: str = "ingest",
        *,
        default_max_attempts: int = 3,
        backoff: Backoff = Backoff(),
        retention: Retention = Retention(),
    ) -> None:
        self.client = client
        self.keys = QueueKeys(queue)
        self.queue = queue
        self.default_max_attempts = default_max_attempts
        self.backoff = backoff
        self.retention = retention
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await self._scripts[name](keys=list(keys), args=list(args))

    # ---- producers -------------------------------------------------------------------

    async def enqueue(self, payload: Mapping[str, Any], *, delay_s: float = 0) -> EnqueueResult:
        return (await self.enqueue_many([payload], delay_s=delay_s))[0]

    async def enqueue_many(
        self, payloads: Iterable[Mapping[str, Any]], *, delay_s: float = 0
    ) -> list[EnqueueResult]:
        """Validate every payload first (all or nothing), then store them in one round trip."""
        if delay_s < 0:
            raise PayloadError("delay_s", "must be >= 0")
        valid = [validate_payload(p) for p in payloads]
        seen: set[str] = set()
        for p in valid:
            if p["job_id"] in seen:
                raise PayloadError("job_id", f"{p['job_id']!r} appears twice in one batch")
            seen.add(p["job_id"])
        if not valid:
            return []
        k = self.keys
        r = self.retention
        args: list[Any] = [r.events_maxlen, 10_000, r.outbox_cap, len(valid)]
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

    async def try_claim(self, worker_id: str, lease_s: float) -> Claim | float | None:
        """One attempt: a Claim, else seconds until the next delayed job is due, else None."""
        k = self.keys
        token = secrets.token_hex(16)
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
        await self.client.blpop([self.keys.wake], timeout=max(timeout_s, 0.001))

    async def renew(self, job_id: str, token: str, lease_s: float) -> RenewResult:
        k = self.keys
        held, cancel, until = await self._run(
            "renew", [k.jobs, k.active], [job_id, token, int(lease_s * 1000)]
        )
        return RenewResult(bool(int(held)), bool(int(cancel)), int(until) / 1000.0 or None)

    async def progress(self, job_id: str, token: str, pct: float, message: str | None) -> bool:
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
            [k.jobs, k.payloads, k.active, k.completed, k.events, k.status_outbox],
            [
                job_id,
                token,
                "" if result is None else json.dumps(result, separators=(",", ":")),
                int(self.retention.keep_completed_s * 1000),
                self.retention.events_maxlen,
                self.retention.trim_limit,
                self.retention.outbox_cap,
                message or "",
                "" if peak_rss_bytes is None else int(peak_rss_bytes),
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
        """Record a failed attempt; `attempt` (1-based) picks the backoff delay."""
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

    async def release(self, job_id: str, token: str) -> bool:
        k = self.keys
        ok, _rev = await self._run(
            "release",
            [k.jobs, k.active, k.waiting, k.seq, k.wake, k.events, k.status_outbox],
            [job_id, token, self.retention.events_maxlen, self.retention.outbox_cap],
        )
        return bool(int(ok))

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

    async def cancel(self, job_id: str) -> str:
        """'cancelled' (was waiting/delayed), 'requested' (active: holder told), else the
        job's final state or 'missing'."""
        validate_job_id(job_id)
        k = self.keys
        outcome, _rev = await self._run(
            "cancel",
            [k.jobs, k.waiting, k.delayed, k.active, k.cancelled, k.events, k.status_outbox],
            [job_id, k.cancel_channel, self.retention.events_maxlen, self.retention.outbox_cap],
        )
        return _s(outcome)

    async def retry(self, job_id: str) -> str:
        """'waiting' when re-queued; else the current state (not retryable) or 'missing'."""
        validate_job_id(job_id)
        k = self.keys
        outcome, _rev = await self._run(
            "retry",
            [k.jobs, k.failed, k.cancelled, k.waiting, k.seq, k.wake, k.events, k.status_outbox],
            [job_id, self.retention.events_maxlen, self.retention.outbox_cap],
        )
        return _s(outcome)

    async def purge(self, state: JobState | str) -> int:
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

    async def resend_status(self, job_ids: Sequence[str]) -> int:
        """Append the current status row of each job to the outbox; returns how many."""
        if not job_ids:
            return 0
        k = self.keys
        return int(await self._run("resend_status", [k.jobs, k.status_outbox], list(job_ids)))

    async def get(self, job_id: str, *, with_payload: bool = False) -> JobRecord | None:
        validate_job_id(job_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.jobs, job_id)
            pipe.hget(self.keys.payloads, job_id)
            raw, payload = await pipe.execute()
        if raw is None:
            return None
        return JobRecord.from_raw(raw, payload if with_payload else None)

    async def counts(self) -> dict[str, int]:
        sets = self.keys.all_state_sets()
        async with self.client.pipeline(transaction=False) as pipe:
            for key in sets.values():
                pipe.zcard(key)
            values = await pipe.execute()
        return {name: int(v) for name, v in zip(sets, values, strict=True)}

    async def list_jobs(
        self, state: JobState | str, *, limit: int = 50, cursor: int = 0
    ) -> tuple[list[JobRecord], int | None]:
        """A page of jobs in one state, in queue order (newest first for finished states)."""
        state = JobState(state)
        zset = self.keys.all_state_sets()[state.value]
        limit = max(1, min(limit, 1000))
        finished = state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
        if finished:
            ids = await self.client.zrevrange(zset, cursor, cursor + limit - 1)
        else:
            ids = await self.client.zrange(zset, cursor, cursor + limit - 1)
        if not ids:
            return [], None
        raws = await self.client.hmget(self.keys.jobs, cast(list[str], ids))
        jobs = [JobRecord.from_raw(r) for r in raws if r is not None]
        return jobs, (cursor + len(ids) if len(ids) == limit else None)

    async def scan_jobs(
        self,
        state: JobState | str,
        *,
        limit: int = 50,
        cursor: int = 0,
        newest_first: bool | None = None,
        tenant_id: str | None = None,
        id_prefix: str = "",
        budget: int = 1000,
    ) -> ScanPage:
        """Up to `limit` jobs of one state matching a tenant and an id prefix, in set order.

        Redis keeps no index by tenant or id, so at most `budget` entries of the state's set
        are examined per call: a page may hold fewer than `limit` matches while
        `next_cursor` says where the next call goes on. The order is queue order (newest
        first for finished states) unless `newest_first` says otherwise.
        """
        state = JobState(state)
        zset = self.keys.all_state_sets()[state.value]
        limit = max(1, min(limit, 1000))
        budget = max(1, min(budget, 10_000))
        if newest_first is None:
            newest_first = state in FINAL_STATES
        read = self.client.zrevrange if newest_first else self.client.zrange
        filtered = tenant_id is not None or bool(id_prefix)
        span = budget if filtered else limit
        ids = [_s(i) for i in await read(zset, cursor, cursor + span - 1)]
        candidates = [(n, i) for n, i in enumerate(ids) if i.startswith(id_prefix)]
        jobs: list[JobRecord] = []
        examined = len(ids)
        for start in range(0, len(candidates), 200):
            chunk = candidates[start : start + 200]
            raws = await self.client.hmget(self.keys.jobs, [i for _, i in chunk])
            for (n, _), raw in zip(chunk, raws, strict=True):
                if raw is None:
                    continue
                rec = JobRecord.from_raw(raw)
                if tenant_id is not None and rec.tenant_id != tenant_id:
                    continue
                jobs.append(rec)
                if len(jobs) == limit:
                    examined = n + 1
                    break
            if len(jobs) == limit:
                break
        if len(jobs) < limit and len(ids) < span:
            return ScanPage(jobs, None, examined)
        return ScanPage(jobs, cursor + examined, examined)

    async def oldest_waiting_age_s(self) -> float | None:
        """Age of the longest-waiting ready job: the front of each priority band, O(log n)."""
        band = 2**50
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.keys.waiting, "-inf", f"({band}", start=0, num=1)
            pipe.zrangebyscore(self.keys.waiting, band - 2**49, "+inf", start=0, num=1)
            high, normal = await pipe.execute()
        ids = [*high, *normal]
        if not ids:
            return None
        raws = await self.client.hmget(self.keys.jobs, ids)
        enqueued = [json.loads(r)["enqueued_at"] for r in raws if r is not None]
        if not enqueued:
            return None
        now_ms = await self._server_ms()
        return max(0.0, (float(now_ms) - float(min(enqueued))) / 1000.0)

    async def server_time_ms(self) -> int:
        """Unix ms on the clock the scripts stamp jobs and stream ids with."""
        return await self._server_ms()

    async def _server_ms(self) -> int:
        """The clock of the server holding this queue, the one the scripts stamp jobs with.

        Not pipelined: redis-py refuses TIME inside a cluster pipeline (it has no key).
        """
        if isinstance(self.client, RedisCluster):
            node = self.client.get_node_from_key(self.keys.jobs)
            secs, micros = await self.client.time(target_nodes=node)
        else:
            secs, micros = await self.client.time()
        return int(secs) * 1000 + int(micros) // 1000

    async def live_workers(self) -> list[dict[str, Any]]:
        from supervisor.queue.workers import WorkerRegistry

        return await WorkerRegistry(self.client, self.keys).live()

    async def read_events(
        self, last_id: str = "$", *, block_ms: int = 1000, count: int = 100
    ) -> list[tuple[str, dict[str, str]]]:
        """Job events after `last_id` from the capped stream, blocking up to `block_ms`."""
        reply: Any = await self.client.xread(
            {self.keys.events: last_id}, count=count, block=block_ms
        )
        out: list[tuple[str, dict[str, str]]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                # Stream fields are whatever a script or a client wrote: never let one
                # entry's bytes end a reader.
                out.append(
                    (
                        _s(entry_id),
                        {_s(a, "replace"): _s(b, "replace") for a, b in fields.items()},
                    )
                )
        return out

    async def cancel_requests(self) -> AsyncIterator[str]:
        """Ids of active jobs whose cancel was requested, as announced (pub/sub).

        Announcements made while nobody listens are not replayed; holders also learn of a
        cancel at their next lease renewal.
        """
        pubsub = self.client.pubsub()
        await pubsub.subscribe(self.keys.cancel_channel)
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield _s(message["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]


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


def _s(value: Any, errors: str = "strict") -> str:
    if isinstance(value, bytes):
        return value.decode(errors=errors)
    return str(value)
