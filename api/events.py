"""Server-sent events of job changes, read from the queue's capped events stream.

Each SSE message carries the stream entry id as its `id`, so a browser's EventSource resumes
after a reconnect (Last-Event-ID) without missing what the stream still holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

from redis.exceptions import RedisError

from api.context import EVENTS_BLOCK_MS, ApiContext, bounded
from api.views import job_view
from supervisor.queue.redaction import DEFAULT_SECRET_KEYS, redact
from supervisor.queue.states import JobState, table_status

log = logging.getLogger(__name__)
STREAM_ID_RE = re.compile(r"^[0-9]{1,19}-[0-9]{1,19}$", re.ASCII)
KEEPALIVE_S = 15.0
_INT_FIELDS = ("attempt", "rev")


def event_data(
    entry_id: str, fields: dict[str, str], secret_keys: Collection[str]
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": entry_id,
        "type": fields.get("type"),
        "job_id": fields.get("job"),
    }
    for key, value in fields.items():
        if key in ("type", "job"):
            continue
        if key in _INT_FIELDS:
            data[key] = int(value)
        elif key == "progress":
            data[key] = float(value)
        else:
            data[key] = value
    state = fields.get("state", "")
    if state in {s.value for s in JobState}:
        data["status"] = table_status(JobState(state)).value
    return dict(redact(data, DEFAULT_SECRET_KEYS | frozenset(secret_keys)))


def _sse(event: str, data: dict[str, Any], entry_id: str | None = None) -> bytes:
    lines = []
    if entry_id is not None:
        lines.append(f"id: {entry_id}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode()


def _valid_stream_id(value: str) -> bool:
    if not STREAM_ID_RE.fullmatch(value):
        return False
    ms, seq = value.split("-")
    return int(ms) < 2**64 and int(seq) < 2**64


async def _start_id(ctx: ApiContext, last_event_id: str | None, not_before_ms: int) -> str:
    if last_event_id and _valid_stream_id(last_event_id):
        ms, seq = (int(x) for x in last_event_id.split("-"))
        # XREAD returns ids after this one: start just before the floor's millisecond.
        return f"{ms}-{seq}" if ms >= not_before_ms else f"{max(0, not_before_ms - 1)}-0"
    # Resolve "now" to a concrete id once: re-reading from "$" would drop what arrives
    # between two reads.
    newest = await bounded(ctx.events_queue.client.xrevrange(ctx.queue.keys.events, count=1))
    if not newest:
        return "0-0"
    raw = newest[0][0]
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def event_stream(
    ctx: ApiContext,
    job_ids: frozenset[str],
    last_event_id: str | None,
    not_before_ms: Mapping[str, int] | None = None,
    tenant: str | None = None,
) -> AsyncIterator[bytes]:
    """Events of `job_ids` (every job when empty). For a tenant-scoped caller (`tenant`,
    with `not_before_ms`): only entries of that tenant's jobs (an entry that does not name
    its tenant is not sent), and nothing older than each job's current run, so a job id
    another tenant takes while the stream is open, or took before, shows none of its
    events."""
    secret_keys = ctx.settings.secret_keys
    floor = dict(not_before_ms or {})
    yield b"retry: 2000\n\n"
    try:
        last_id = await _start_id(ctx, last_event_id, min(floor.values(), default=0))
        # A watcher of particular jobs first gets where each stands now, so a change made
        # just before it connected is not lost; each is sent as soon as it is read.
        for job_id in sorted(job_ids):
            rec = await bounded(ctx.queue.get(job_id, with_payload=True))
            # Checked again here: the id may have passed to another tenant's job since.
            if rec is not None and (tenant is None or rec.tenant_id == tenant):
                view = job_view(rec, ctx.queue.queue, secret_keys).model_dump(mode="json")
                yield _sse("snapshot", view)
    except (TimeoutError, RedisError, OSError) as exc:
        # The response has started; end it and let EventSource reconnect after `retry`.
        log.debug("events stream not started: %s", type(exc).__name__)
        yield b": redis unavailable\n\n"
        return
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    while True:
        try:
            entries = await ctx.events_queue.read_events(
                last_id, block_ms=EVENTS_BLOCK_MS, count=200
            )
        except (TimeoutError, RedisError, OSError) as exc:
            log.debug("events read failed: %s", type(exc).__name__)
            yield b": redis unavailable\n\n"
            await asyncio.sleep(1.0)
            continue
        for entry_id, fields in entries:
            last_id = entry_id
            job = fields.get("job")
            if job_ids and job not in job_ids:
                continue
            if job in floor and int(entry_id.split("-")[0]) < floor[job]:
                continue
            if tenant is not None and fields.get("tenant") != tenant:
                continue
            try:
                data = event_data(entry_id, fields, secret_keys)
                chunk = _sse(str(data.get("type") or "message"), data, entry_id)
            except (ValueError, TypeError) as exc:
                # One malformed entry is skipped; the stream and every later entry go on.
                log.warning("events: skipped entry %s (%s)", entry_id, type(exc).__name__)
                continue
            yield chunk
            quiet_since = loop.time()
        if loop.time() - quiet_since >= KEEPALIVE_S:
            yield b": keep-alive\n\n"
            quiet_since = loop.time()
