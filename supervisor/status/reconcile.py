"""The reconciler: re-send Redis's truth for status rows that are missing or behind.

The outbox makes every change durable, but entries can still be lost outside our control:
a Redis failover that drops the last writes, an operator's `XTRIM`, rows refused while a
store's migration was missing. A periodic sweep compares a bounded page of job records
with their rows and appends a fresh snapshot of each job whose row is missing or older
than the record; the projectors then write it. One daemon sweeps at a time (a short lock
in Redis); the scan cursor is kept in Redis, so successive sweeps by any daemon walk the
whole job hash.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from supervisor.queue.jobqueue import JobQueue
from supervisor.status.backend import StatusBackend

log = logging.getLogger(__name__)

CURSOR_FIELD = "cursor"


@dataclass
class ReconcileReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # no row at all
    behind: list[str] = field(default_factory=list)  # a row older than the record
    resent: int = 0
    wrapped: bool = False  # the sweep reached the end of the job hash

    def merge(self, other: ReconcileReport) -> None:
        self.checked += other.checked
        self.missing += other.missing
        self.behind += other.behind
        self.resent += other.resent
        self.wrapped = other.wrapped


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _record_key(raw: Any) -> tuple[float, int] | None:
    try:
        rec = json.loads(raw)
        return float(rec["enqueued_at"]) / 1000.0, int(rec.get("rev", 0))
    except (ValueError, KeyError, TypeError):
        return None


async def take_lock(queue: JobQueue, owner: str, ttl_s: float) -> bool:
    """The sweep lock, held until it expires: at most one sweep per `ttl_s` fleet-wide."""
    got = await queue.client.set(
        queue.keys.status_reconcile_lock, owner, nx=True, px=max(1, int(ttl_s * 1000))
    )
    return bool(got)


async def sweep_page(queue: JobQueue, backend: StatusBackend, *, limit: int) -> ReconcileReport:
    """Check up to about `limit` job records from the stored cursor on; re-send the stale."""
    keys = queue.keys
    client = queue.client
    raw_cursor = await client.hget(keys.status_reconcile, CURSOR_FIELD)
    cursor = int(raw_cursor or 0)
    records: dict[str, tuple[float, int]] = {}
    report = ReconcileReport()
    while True:
        cursor, page = await client.hscan(keys.jobs, cursor, count=min(limit, 1000))
        assert isinstance(page, dict)
        for job_id, raw in page.items():
            key = _record_key(raw)
            if key is not None:
                records[_text(job_id)] = key
        if cursor == 0:
            report.wrapped = True
            break
        if len(records) >= limit:
            break
    await client.hset(keys.status_reconcile, CURSOR_FIELD, str(cursor))
    report.checked = len(records)
    if not records:
        return report
    rows = await backend.fetch_versions(list(records))
    for job_id, key in records.items():
        row = rows.get(job_id)
        if row is None:
            report.missing.append(job_id)
        elif row < key:
            report.behind.append(job_id)
    stale = report.missing + report.behind
    if stale:
        report.resent = await queue.resend_status(stale)
        log.warning(
            "status reconciler re-sent %d rows (missing: %d, behind: %d), e.g. %s",
            report.resent,
            len(report.missing),
            len(report.behind),
            ", ".join(stale[:5]),
        )
    return report


async def sweep_all(
    queue: JobQueue, backend: StatusBackend, *, page: int = 1000
) -> ReconcileReport:
    """A whole pass over the job hash from the start (`ingestctl status-sync`)."""
    await queue.client.hset(queue.keys.status_reconcile, CURSOR_FIELD, "0")
    total = ReconcileReport()
    while True:
        part = await sweep_page(queue, backend, limit=page)
        total.merge(part)
        if part.wrapped:
            return total
