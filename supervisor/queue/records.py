"""What the job protocol stores and returns: job records, results of its verbs, retry and
retention policies."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from supervisor.queue.states import JobState

log = logging.getLogger(__name__)


class UnreadableRecord(ValueError):
    """A stored job record this version cannot read (Redis corruption, or a record of
    another version): one job's trouble, never a whole listing's."""


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
    # When it last became ready to run: enqueued, due, or given back (a release or a
    # recovered stall), whichever was last.
    ready_at: float = 0.0

    @classmethod
    def from_raw(cls, raw: str | bytes, payload: str | bytes | None = None) -> JobRecord:
        """Raises UnreadableRecord."""
        return cls.from_stored(stored_record(raw), payload)

    @classmethod
    def from_stored(cls, rec: dict[str, Any], payload: str | bytes | None = None) -> JobRecord:
        """From a stored record already parsed once (its result is still JSON text).
        Raises UnreadableRecord."""
        try:
            return cls._from_stored(rec, payload)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise UnreadableRecord(f"job record: {type(exc).__name__}") from None

    @classmethod
    def _from_stored(cls, rec: dict[str, Any], payload: str | bytes | None) -> JobRecord:

        def secs(key: str) -> float | None:
            v = rec.get(key)
            return None if v is None else float(v) / 1000.0

        result_raw = rec.get("result")
        enqueued_at = float(rec.get("enqueued_at", 0)) / 1000.0
        due_at = secs("due_at")
        return cls(
            job_id=rec["id"],
            state=JobState(rec["state"]),
            tenant_id=rec.get("tenant", ""),
            priority=rec.get("priority", "normal"),
            attempt=int(rec.get("attempt", 0)),
            max_attempts=int(rec.get("max_attempts", 1)),
            stalls=int(rec.get("stalls", 0)),
            rev=int(rec.get("rev", 0)),
            enqueued_at=enqueued_at,
            started_at=secs("started_at"),
            finished_at=secs("finished_at"),
            due_at=due_at,
            lease_until=secs("lease_until"),
            worker_id=rec.get("worker"),
            progress=float(rec.get("progress", 0)),
            progress_message=rec.get("message"),
            error=rec.get("error"),
            result=None if result_raw is None else json.loads(result_raw),
            cancel_requested=bool(rec.get("cancel_requested", False)),
            payload=None if payload is None else decode_payload(payload)[0],
            ready_at=max(enqueued_at, due_at or 0.0, secs("ready_at") or 0.0),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["state"] = self.state.value
        return out


def as_utc(ts: float | None) -> datetime | None:
    """A record's time (Unix seconds) as an aware datetime; None for none, or for one no
    calendar can show (a record stored before due times were bounded)."""
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def stored_record(raw: str | bytes) -> dict[str, Any]:
    """A stored record as its JSON object (raises UnreadableRecord)."""
    try:
        rec = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UnreadableRecord(f"job record: {type(exc).__name__}") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
        raise UnreadableRecord("job record: not a record")
    return rec


def record_or_none(
    job_id: str,
    raw: str | bytes,
    payload: str | bytes | None = None,
    *,
    tenant_id: str | None = None,
) -> JobRecord | None:
    """`job_id`'s record, or None where it cannot be read (logged: such a job reads as
    missing, and every other job as before) or is not `tenant_id`'s (when given; passed
    over before its result is decoded)."""
    try:
        stored = stored_record(raw)
        if tenant_id is not None and stored.get("tenant", "") != tenant_id:
            return None
        return JobRecord.from_stored(stored, payload)
    except UnreadableRecord as exc:
        log.warning("job %s read as missing: %s", job_id, exc)
        return None


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
    outcome: str  # "retry" | "failed" | "cancelled" | "lost"
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
    bytes_read: int = 0  # of stored records, matched or not


def as_str(value: Any, errors: str = "strict") -> str:
    if isinstance(value, bytes):
        return value.decode(errors=errors)
    return str(value)
