"""Bounded reads behind the dashboard: throughput, one job's history, dead letters by error.

Each reads a capped amount whatever the queue holds: the events stream is capped by the
queue's retention, the dead-letter grouping looks at the newest `scan` failed jobs only.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from api.events import event_data
from api.views import job_view
from supervisor.queue.jobqueue import JobQueue, JobRecord
from supervisor.queue.records import record_or_none
from supervisor.queue.redaction import DEFAULT_SECRET_KEYS, scrub, secret_values

PAGE = 1000
# Event types the throughput chart counts, per minute.
COUNTED = ("completed", "failed", "retried")
THROUGHPUT_CACHE_S = 5.0


def _id_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def _before(entry_id: str) -> str:
    """The stream id just before `entry_id` (an inclusive bound for XREVRANGE)."""
    ms, _, seq = entry_id.partition("-")
    if int(seq) > 0:
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-{2**64 - 1}"


def _after(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq) + 1}"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


Entry = tuple[str, dict[str, str]]


async def _entries(
    queue: JobQueue, lo: str, hi: str, count: int, *, newest_first: bool = False
) -> list[Entry]:
    """Stream entries between two ids (both inclusive), decoded."""
    key = queue.keys.events
    if newest_first:
        raw: Any = await queue.client.xrevrange(key, max=hi, min=lo, count=count)
    else:
        raw = await queue.client.xrange(key, min=lo, max=hi, count=count)
    return [(_s(i), {_s(k): _s(v) for k, v in (f or {}).items()}) for i, f in raw or []]


@dataclass
class Throughput:
    minute_starts: list[int]  # unix ms of each bucket, oldest first
    counts: dict[str, list[int]]  # event type -> per-minute count
    covered_from_ms: int  # buckets before this hold no data (the stream was trimmed)
    server_time_ms: int


_cache: dict[str, tuple[float, Throughput]] = {}


async def throughput(queue: JobQueue, minutes: int = 60, max_entries: int = 20_000) -> Throughput:
    """Completed, failed and retried per minute over the last `minutes`, from the events
    stream, newest first until the window's start or `max_entries`; cached briefly so many
    open dashboards cost one read."""
    hit = _cache.get(queue.queue)
    if hit is not None and time.monotonic() - hit[0] < THROUGHPUT_CACHE_S:
        return hit[1]
    now_ms = await queue.server_time_ms()
    first_ms = (now_ms // 60_000 - minutes + 1) * 60_000
    counts = {kind: [0] * minutes for kind in COUNTED}
    hi = "+"
    read = 0
    covered = first_ms
    while read < max_entries:
        entries = await _entries(queue, f"{first_ms}-0", hi, PAGE, newest_first=True)
        for entry_id, fields in entries:
            kind = fields.get("type", "")
            if kind in counts:
                slot = (_id_ms(entry_id) - first_ms) // 60_000
                if 0 <= slot < minutes:
                    counts[kind][slot] += 1
        read += len(entries)
        if len(entries) < PAGE:
            break
        hi = _before(entries[-1][0])
        if read >= max_entries:
            covered = _id_ms(entries[-1][0])
    # A full stream has been trimmed: nothing older than its first entry is known.
    first = await _entries(queue, "-", "+", 1)
    if first and await queue.client.xlen(queue.keys.events) >= queue.retention.events_maxlen:
        covered = max(covered, _id_ms(first[0][0]))
    out = Throughput(
        minute_starts=[first_ms + i * 60_000 for i in range(minutes)],
        counts=counts,
        covered_from_ms=covered,
        server_time_ms=now_ms,
    )
    _cache[queue.queue] = (time.monotonic(), out)
    return out


@dataclass
class History:
    events: list[dict[str, Any]]
    complete: bool  # False: older events of this job have left the capped stream


async def job_history(
    queue: JobQueue,
    rec: JobRecord,
    secret_keys: Collection[str],
    max_entries: int = 10_000,
) -> History:
    """The job's events still in the stream, oldest first: read from its enqueue time to its
    finish (or now, if it may still change), at most `max_entries` entries of the stream."""
    secrets = secret_values(rec.payload, DEFAULT_SECRET_KEYS | frozenset(secret_keys))
    start = f"{int(rec.enqueued_at * 1000)}-0"
    lo = start
    hi = "+"
    if rec.finished_at is not None and rec.state.value in ("completed", "failed", "cancelled"):
        hi = f"{int(rec.finished_at * 1000) + 1}-0"
    events: list[dict[str, Any]] = []
    read = 0
    complete = True
    while True:
        entries = await _entries(queue, lo, hi, PAGE)
        for entry_id, fields in entries:
            # Another tenant's job of the same id (it took the id after this run ended).
            if (
                fields.get("job") != rec.job_id
                or fields.get("tenant", rec.tenant_id) != rec.tenant_id
            ):
                continue
            data = event_data(entry_id, fields, secret_keys)
            for name in ("error", "message"):
                if isinstance(data.get(name), str):
                    data[name] = scrub(data[name], secrets)
            events.append(data)
        read += len(entries)
        if len(entries) < PAGE:
            break
        if read >= max_entries:
            complete = False
            break
        lo = _after(entries[-1][0])
    first = await _entries(queue, "-", "+", 1)
    if first and _id_ms(first[0][0]) > _id_ms(start):
        complete = False
    return History(events=events, complete=complete)


@dataclass
class ErrorGroup:
    error: str
    count: int = 0
    job_ids: list[str] = field(default_factory=list)
    tenants: dict[str, int] = field(default_factory=dict)
    latest_at: float = 0.0


def first_line(error: str | None, limit: int = 300) -> str:
    line = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
    return line[:limit] or "(no error text)"


async def dead_letters(
    queue: JobQueue, secret_keys: Collection[str], scan: int = 500
) -> tuple[int, int, list[ErrorGroup]]:
    """(failed jobs in all, how many were examined, groups by the error's first line) over
    the newest `scan` failed jobs, each error scrubbed of its own payload's secrets."""
    total = int(await queue.client.zcard(queue.keys.failed))
    ids = [_s(i) for i in await queue.client.zrevrange(queue.keys.failed, 0, scan - 1)]
    groups: dict[str, ErrorGroup] = {}
    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        async with queue.client.pipeline(transaction=False) as pipe:
            pipe.hmget(queue.keys.jobs, chunk)
            pipe.hmget(queue.keys.payloads, chunk)
            raws, payloads = await pipe.execute()
        for job_id, raw, payload in zip(chunk, raws, payloads, strict=True):
            rec = None if raw is None else record_or_none(job_id, raw, payload)
            if rec is None:
                continue
            view = job_view(rec, queue.queue, secret_keys)
            line = first_line(view.error)
            group = groups.setdefault(line, ErrorGroup(error=line))
            group.count += 1
            group.job_ids.append(view.job_id)
            group.tenants[view.tenant_id] = group.tenants.get(view.tenant_id, 0) + 1
            if view.finished_at is not None:
                group.latest_at = max(group.latest_at, view.finished_at.timestamp())
    ordered = sorted(groups.values(), key=lambda g: (-g.count, -g.latest_at))
    return total, len(ids), ordered
