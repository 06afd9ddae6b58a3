"""Entries of a queue's status outbox stream: what the Lua scripts append, as rows.

Each entry is a whole snapshot of one job's row (see `status_out` in `lua/_lib.lua`):
string fields, times in milliseconds of the Redis server's clock. Entries are parsed
defensively: the stream is Redis data that an operator (or a bug) may have written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from supervisor.queue.records import as_str
from supervisor.queue.states import JobState, table_status
from supervisor.queue.walk import MAX_DEPTH, json_nested_too_deep
from supervisor.status.update import StatusUpdate

log = logging.getLogger(__name__)

# The consumer group of the projectors; trimming follows this group only.
GROUP = "status-projector"


class BadEntry(ValueError):
    """An outbox entry that does not describe a row (acknowledged and logged, not retried)."""


@dataclass(frozen=True)
class OutboxEntry:
    entry_id: str
    row: StatusUpdate

    @property
    def appended_ms(self) -> int:
        """When Redis appended the entry: the millisecond part of its stream id."""
        return int(self.entry_id.split("-", 1)[0])


# PostgreSQL text and jsonb cannot hold NUL, and a child may print one: rows carry none.
def _without_nul(value: Any) -> Any:
    """Child-made JSON without NUL characters, in keys and strings alike."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _stored_result(raw: str) -> Any:
    """A record's result as its row holds it. One that no store should have to walk (not
    JSON, or nested deeper than a payload may be: the runner refuses both, a record from
    elsewhere may hold them) is left out, with a note, rather than keep the row from its
    final state."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return {"result_omitted": "not readable as JSON"}
    if json_nested_too_deep(raw, value):
        return {"result_omitted": f"nested deeper than {MAX_DEPTH} levels"}
    return _without_nul(value)


def _seconds(fields: dict[str, str], name: str) -> float | None:
    raw = fields.get(name)
    return None if raw in (None, "") else float(raw) / 1000.0


def _int(fields: dict[str, str], name: str) -> int | None:
    raw = fields.get(name)
    return None if raw in (None, "") else int(float(raw))


def row_from_fields(fields: dict[str, str], queue: str) -> StatusUpdate:
    """The row an entry of `queue`'s outbox (or a `status_rows` answer) describes."""
    fields = {k: v.replace("\x00", "") for k, v in fields.items()}
    state = JobState(fields["state"])
    status = table_status(state).value
    active = state is JobState.ACTIVE
    final = status in ("completed", "failed", "cancelled")
    started = _seconds(fields, "started")
    finished = _seconds(fields, "finished") if final else None
    result_raw = fields.get("result")
    max_attempts = _int(fields, "max")
    return StatusUpdate(
        job_id=fields["job"],
        tenant_id=fields["tenant"],
        status=status,
        attempt=_int(fields, "attempt") or 0,
        rev=_int(fields, "rev") or 0,
        seq_run=float(fields["run"]) / 1000.0,
        progress=float(fields.get("progress") or 0),
        progress_message=fields.get("msg"),
        max_attempts=max_attempts if max_attempts and max_attempts > 0 else None,
        # A running attempt shows nothing of the previous attempt's outcome.
        error=None if active else fields.get("error"),
        result=_stored_result(result_raw) if result_raw and status == "completed" else None,
        worker_id=fields.get("worker"),
        queued_at=float(fields["run"]) / 1000.0,
        started_at=started,
        finished_at=finished,
        # Clocks of two servers (a failover) can disagree: never a negative duration.
        duration_ms=max(0, round((finished - started) * 1000)) if finished and started else None,
        peak_rss_bytes=_int(fields, "rss") if final else None,
        queue=queue,
    )


def rows_from_records(
    records: Iterable[dict[str, str]], queue: str, unreadable: list[str] | None = None
) -> list[StatusUpdate]:
    """The rows `status_rows` answers describe. A record no row can be made of (a state no
    version writes: edited by hand, or from elsewhere) is logged, added to `unreadable`,
    and skipped: it never stops the rows of the others."""
    rows: list[StatusUpdate] = []
    for fields in records:
        try:
            rows.append(row_from_fields(fields, queue))
        except Exception as exc:
            job = fields.get("job", "")[:200]
            log.error("the record of job %r makes no status row (%r); skipped", job, exc)
            if unreadable is not None:
                unreadable.append(job)
    return rows


def parse_entry(entry_id: Any, raw_fields: dict[Any, Any], queue: str) -> OutboxEntry:
    fields = {as_str(k, "replace"): as_str(v, "replace") for k, v in raw_fields.items()}
    eid = as_str(entry_id, "replace")
    try:
        return OutboxEntry(eid, row_from_fields(fields, queue))
    except Exception as exc:  # anything in the stream that is not a row, however broken
        raise BadEntry(f"outbox entry {eid} is not a status row: {exc!r}"[:500]) from None


def bare_final(row: StatusUpdate) -> StatusUpdate:
    """A final row without the child's text (message, error, result): what is written when
    the store refuses the whole row, so the row at least shows the job finished."""
    return replace(row, progress_message=None, error=None, result=None)
