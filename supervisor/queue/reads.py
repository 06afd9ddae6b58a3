"""Read-only queries of a queue: records, counts, pages by state, events, workers, cancels."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from supervisor.queue.connection import AnyRedis
from supervisor.queue.keys import QueueKeys
from supervisor.queue.payload import validate_job_id
from supervisor.queue.records import JobRecord, ScanPage, record_or_none
from supervisor.queue.records import as_str as _s
from supervisor.queue.states import FINAL_STATES, JobState
from supervisor.queue.workers import WorkerRegistry

# Bytes of stored records one page may read (beyond it, one record at most): a record holds
# a child's result (a 1 MiB RESULT line can take 3 MiB stored), so a page of
# 1,000 could otherwise hold gigabytes in the reader's memory.
PAGE_BYTES = 8 * 1024 * 1024
_CHUNK = 200  # records sized, then read, per round trip
_FRONT = 8  # jobs looked at from the front of each priority band for the oldest ready one


class QueueReads:
    """The queries of `JobQueue` that change nothing."""

    client: AnyRedis
    keys: QueueKeys

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any: ...

    async def get(self, job_id: str, *, with_payload: bool = False) -> JobRecord | None:
        validate_job_id(job_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.jobs, job_id)
            pipe.hget(self.keys.payloads, job_id)
            raw, payload = await pipe.execute()
        if raw is None:
            return None
        return record_or_none(job_id, raw, payload if with_payload else None)

    async def server_id(self) -> str:
        """The run id of the Redis server that holds this queue's keys: a new one after
        every restart or failover, when the last writes before it may have been lost.
        Empty where the server does not tell (a Redis-compatible store without it)."""
        client = self.client
        try:
            if isinstance(client, RedisCluster):
                node = client.get_node_from_key(self.keys.jobs)
                info = await client.info("server", target_nodes=node)
            else:
                info = await client.info("server")
        except ResponseError:  # INFO renamed away or refused
            return ""
        if "run_id" not in info and len(info) == 1:  # one node's answer, keyed by the node
            info = next(iter(info.values()))
        return str(info.get("run_id", "")) if isinstance(info, dict) else ""

    async def counts(self) -> dict[str, int]:
        """Jobs per state; a delayed job already due counts as waiting (see counts.lua)."""
        sets = self.keys.all_state_sets()
        names = ["waiting", "delayed", *(n for n in sets if n not in ("waiting", "delayed"))]
        values = await self._run("counts", [sets[n] for n in names], [])
        return {name: int(v) for name, v in zip(names, values, strict=True)}

    async def list_jobs(
        self, state: JobState | str, *, limit: int = 50, cursor: int = 0
    ) -> tuple[list[JobRecord], int | None]:
        """A page of jobs in one state, in queue order (newest first for finished states),
        and where the next starts (None at the end): at most `limit` jobs and PAGE_BYTES
        of stored records (at least one), as records hold children's results."""
        page = await self.scan_jobs(state, limit=limit, cursor=cursor)
        return page.jobs, page.next_cursor

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
        max_bytes: int = PAGE_BYTES,
    ) -> ScanPage:
        """Up to `limit` jobs of one state matching a tenant and an id prefix, in set order.

        Redis keeps no index by tenant or id, so at most `budget` entries of the state's set
        are examined per call, and no more than `max_bytes` of stored records are read,
        matched or not (at least one record; records hold children's results): a page may
        hold fewer than `limit` matches while `next_cursor` says where the next call goes
        on. The order is queue order (newest first for finished states) unless
        `newest_first` says otherwise.
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
        read_bytes, pos, last, full = 0, 0, -1, False
        while pos < len(candidates) and not full:
            window = candidates[pos : pos + _CHUNK]
            # Sizes first (HSTRLEN sends no record): only what fits in the bytes left is
            # fetched, and at least the page's first record.
            sizes = await self._stored_sizes([i for _, i in window])
            take, planned = 0, read_bytes
            for size in sizes:
                if planned + size > max_bytes and (take or last >= 0):
                    full = True
                    break
                planned += size
                take += 1
            chunk = window[:take]
            pos += take
            raws = await self.client.hmget(self.keys.jobs, [i for _, i in chunk]) if chunk else []
            for (n, job_id), raw in zip(chunk, raws, strict=True):
                last = n
                if raw is None:
                    continue
                read_bytes += len(raw)
                job = record_or_none(job_id, raw, tenant_id=tenant_id)
                if job is not None:
                    jobs.append(job)
                if len(jobs) == limit:
                    full = True
                    break
        if not full and len(ids) < span:
            return ScanPage(jobs, None, examined, read_bytes)
        if full:
            examined = last + 1
        return ScanPage(jobs, cursor + examined, examined, read_bytes)

    async def _stored_sizes(self, ids: list[str]) -> list[int]:
        """Each record's stored length in bytes (0 for a missing one), in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hstrlen(self.keys.jobs, job_id)
            return [int(n) for n in await pipe.execute()]

    async def oldest_waiting_age_s(self) -> float | None:
        """How long the longest-waiting ready job has been ready, O(log n): the first few of
        each priority band (a job given back goes to the front, ready from then) and the
        earliest delayed job if it is due (ready from its due time)."""
        band = 2**50
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.keys.waiting, "-inf", f"({band}", start=0, num=_FRONT)
            pipe.zrangebyscore(self.keys.waiting, band - 2**49, "+inf", start=0, num=_FRONT)
            pipe.zrange(self.keys.delayed, 0, 0, withscores=True)
            high, normal, first_due = await pipe.execute()
        now_ms = float(await self._server_ms())
        ready = [float(score) for _id, score in first_due if float(score) <= now_ms]
        ids = [*high, *normal]
        if ids:
            raws = await self.client.hmget(self.keys.jobs, ids)
            for job_id, raw in zip(ids, raws, strict=True):
                job = record_or_none(_s(job_id), raw) if raw is not None else None
                if job is not None:
                    ready.append(job.ready_at * 1000.0)
        if not ready:
            return None
        return max(0.0, (now_ms - min(ready)) / 1000.0)

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
