"""What `ingestctl` prints: JSON documents shaped like the API's responses, and their human
renderings (aligned tables, ages such as `3s ago`, `-` for nothing, JSON values as JSON).

Text that came from a job (errors, messages, results) is untrusted: control characters are
replaced before it reaches a terminal, so a child cannot move the cursor or recolour it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from supervisor.queue.jobqueue import JobRecord
from supervisor.queue.payload import replace_surrogates
from supervisor.queue.records import as_utc
from supervisor.queue.redacted import redacted_texts
from supervisor.queue.redaction import SecretKeys
from supervisor.queue.states import JobState, table_status

NOTHING = "-"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f\x80-\x9f]")


# --- JSON documents (the API's field names and formats) -------------------------------------


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC, as the API writes datetimes."""
    moment = as_utc(ts)
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def job_doc(rec: JobRecord, queue: str, secret_keys: SecretKeys) -> dict[str, Any]:
    """A job as `GET /jobs/{id}` shows it (api.models.Job), secrets removed, plus `stalls`."""
    doc: dict[str, Any] = replace_surrogates(
        {
            "job_id": rec.job_id,
            "queue": queue,
            "tenant_id": rec.tenant_id,
            "priority": rec.priority,
            "state": rec.state.value,
            "status": table_status(rec.state).value,
            "progress": min(100.0, max(0.0, rec.progress)),
            "attempt": rec.attempt,
            "max_attempts": rec.max_attempts,
            "stalls": rec.stalls,
            "worker_id": rec.worker_id,
            "cancel_requested": rec.cancel_requested,
            "enqueued_at": iso(rec.enqueued_at),
            "started_at": iso(rec.started_at),
            "finished_at": iso(rec.finished_at),
            "due_at": iso(rec.due_at),
            **redacted_texts(rec, secret_keys),
        }
    )
    return doc


def workers_doc(live: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Live supervisors as `GET /workers` shows them (api.models.Workers)."""
    workers = [{"worker_id": "?", "slots": 0, "busy": 0, "stopping": False, **w} for w in live]
    workers.sort(key=lambda w: str(w["worker_id"]))
    return {
        "workers": workers,
        "total_slots": sum(int(w["slots"]) for w in workers if not w["stopping"]),
        "busy_slots": sum(int(w["busy"]) for w in workers),
    }


def dumps(doc: Any) -> str:
    return json.dumps(doc, default=str)  # ASCII: no raw control byte reaches a terminal


# --- human text ---------------------------------------------------------------------------


def text(value: Any, *, one_line: bool = True) -> str:
    """A value for people: `-` for nothing, JSON for structures and booleans, else str."""
    if value is None or value == "":
        return NOTHING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list | tuple):
        out = dumps(value)
    elif isinstance(value, float):
        out = f"{value:g}"
    else:
        out = str(value)
    return (_CONTROL_OR_NEWLINE if one_line else _CONTROL).sub(" " if one_line else "?", out)


def duration(seconds: float) -> str:
    """`850ms`, `12s`, `3m 20s`, `2h 5m`, `3d 4h`."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    total = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if total >= size:
            rest = (total % size) // sub_size
            return f"{total // size}{unit} {rest}{sub}" if rest else f"{total // size}{unit}"
    minutes, secs = divmod(total, 60)
    return f"{minutes}m {secs}s" if secs else f"{minutes}m"


def age(ts: float | None, now: float) -> str:
    """`3s ago` for the past, `in 5s` for the future, `-` for nothing."""
    if ts is None:
        return NOTHING
    delta = now - ts
    return f"{duration(delta)} ago" if delta >= 0 else f"in {duration(-delta)}"


def when(ts: float | None, now: float) -> str:
    """A point in time with its age: `2026-12-01 05:31:34 UTC (3s ago)`."""
    moment = as_utc(ts)
    if ts is None or moment is None:
        return NOTHING
    return f"{moment.strftime('%Y-%m-%d %H:%M:%S UTC')} ({age(ts, now)})"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns aligned on the widest cell; the last column is not padded."""
    cells = [[text(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    lines = []
    for row in [list(headers), *cells]:
        padded = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def fields(pairs: Iterable[tuple[str, str]]) -> str:
    """`name  value` lines, names aligned; a multi-line value is indented under its first."""
    items = list(pairs)
    width = max((len(k) for k, _ in items), default=0)
    out = []
    for key, value in items:
        first, *rest = value.split("\n") or [""]
        out.append(f"{key.ljust(width)}  {first}")
        out.extend(" " * (width + 2) + line for line in rest)
    return "\n".join(out)


def shorten(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def job_text(
    rec: JobRecord, doc: Mapping[str, Any], now: float, holder_live: bool | None = None
) -> str:
    """`ingestctl status`: every field of the JSON document, for people; for a running
    job, also when its lease runs out, and whether its supervisor still beats
    (`holder_live`, None when not known)."""
    if rec.started_at is None:
        ran = NOTHING
    elif rec.finished_at is not None:
        ran = duration(rec.finished_at - rec.started_at)
    else:
        ran = f"{duration(now - rec.started_at)} so far"
    pairs = [
        ("job_id", text(doc["job_id"])),
        ("queue", text(doc["queue"])),
        ("tenant_id", text(doc["tenant_id"])),
        ("priority", text(doc["priority"])),
        ("state", text(doc["state"])),
        ("status", text(doc["status"])),
        ("progress", f"{doc['progress']:.0f}%"),
        ("message", text(doc["message"])),
        ("attempt", f"{doc['attempt']} of {doc['max_attempts']}"),
        ("stalls", text(doc["stalls"])),
        ("worker_id", text(doc["worker_id"]) + _holder_note(holder_live)),
        ("lease", lease_text(rec, now)),
        ("cancel_requested", text(doc["cancel_requested"])),
        ("enqueued_at", when(rec.enqueued_at, now)),
        ("started_at", when(rec.started_at, now)),
        ("finished_at", when(rec.finished_at, now)),
        ("duration", ran),
        ("due_at", when(rec.due_at, now)),
        ("error", text(doc["error"], one_line=False)),
        ("result", text(doc["result"])),
        ("payload", text(doc["payload"])),
    ]
    return fields(pairs)


def _holder_note(holder_live: bool | None) -> str:
    if holder_live is False:
        return " (no live heartbeat: its supervisor is gone)"
    return ""


def lease_text(rec: JobRecord, now: float) -> str:
    """When a running job's lease runs out, after which a reaper gives the job back (or
    ends it, if a cancel was asked for)."""
    if rec.state is not JobState.ACTIVE or rec.lease_until is None:
        return NOTHING
    left = rec.lease_until - now
    if left >= 0:
        return f"runs out in {duration(left)}"
    return f"ran out {duration(-left)} ago: a reaper takes the job back"


def job_age(rec: JobRecord, now: float) -> str:
    """The age that matters for a job's state: since it finished, started or was enqueued."""
    return age(rec.finished_at or rec.started_at or rec.enqueued_at, now)


def jobs_text(recs: Sequence[JobRecord], docs: Sequence[Mapping[str, Any]], now: float) -> str:
    rows = [
        (
            d["job_id"],
            d["tenant_id"],
            d["state"],
            f"{d['progress']:.0f}%",
            f"{d['attempt']}/{d['max_attempts']}",
            job_age(r, now),
            shorten(text(d["error"]), 60),
        )
        for r, d in zip(recs, docs, strict=True)
    ]
    return table(("JOB_ID", "TENANT_ID", "STATE", "PROGRESS", "ATTEMPT", "AGE", "ERROR"), rows)


def workers_text(doc: Mapping[str, Any], now: float) -> str:
    rows = [
        (
            w["worker_id"],
            w.get("host"),
            w.get("pid"),
            f"{w['busy']}/{w['slots']}",
            age(w.get("started"), now),
            age(w.get("beat_at"), now),
            "stopping" if w["stopping"] else "serving",
        )
        for w in doc["workers"]
    ]
    head = ("WORKER_ID", "HOST", "PID", "SLOTS", "STARTED", "HEARTBEAT", "STATE")
    summary = f"{len(rows)} live, {doc['busy_slots']}/{doc['total_slots']} slots busy"
    return f"{table(head, rows)}\n{summary}" if rows else f"no live workers\n{summary}"


STATE_ORDER = ("waiting", "delayed", "active", "completed", "failed", "cancelled")


def counts_text(counts: Mapping[str, int]) -> str:
    names = [s for s in STATE_ORDER if s in counts]
    names += sorted(s for s in counts if s not in STATE_ORDER)
    return table(("STATE", "JOBS"), [(name, counts[name]) for name in names])
