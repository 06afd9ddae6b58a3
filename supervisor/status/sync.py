"""A whole reconcile pass by hand (`ingestctl status-sync`): compare every job record in
Redis with its row and write the current row of each missing, stale or ahead one straight
to the store. It never reads the outbox, so it takes nothing from the daemons' projectors."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from supervisor.queue.jobqueue import JobQueue
from supervisor.status.backend import NoneBackend, StatusBackend
from supervisor.status.lost import LOST_AFTER_S, fail_lost_rows
from supervisor.status.outbox import rows_from_records
from supervisor.status.parked import LockBudget, ParkedRows, apply_unless_locked, write_parked
from supervisor.status.reconcile import ReconcileReport, compare_page, replace_rows_ahead

WRITE_BATCH = 200


@dataclass(frozen=True)
class SyncReport:
    store: str
    checked: int
    missing: list[str]
    behind: list[str]
    ahead: list[str]  # rows newer than Redis's record (it lost writes): replaced
    foreign: list[str]
    lost: list[str]  # rows of jobs Redis no longer has that said queued or processing: failed
    written: int  # rows the store changed
    unreadable: list[str]  # records no row can be made of (edited by hand): rows left as they are

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def status_sync(
    queue: JobQueue,
    backend: StatusBackend,
    *,
    page: int = 1000,
    lost_after_s: float = LOST_AFTER_S,
) -> SyncReport:
    if isinstance(backend, NoneBackend):
        raise ValueError("status-sync needs a status store; INGEST_STATUS_BACKEND is none")
    total = ReconcileReport()
    written = 0
    unreadable: list[str] = []
    while done := await write_parked(queue, backend):  # every parked row that can go now
        written += done
    parked = ParkedRows(queue.client, queue.keys)
    cursor = 0
    while True:
        part = await compare_page(queue, backend, cursor, limit=page)
        budget = LockBudget()
        stale = part.stale
        for start in range(0, len(stale), WRITE_BATCH):
            fields = await queue.status_rows(stale[start : start + WRITE_BATCH])
            rows = rows_from_records(fields, queue.queue, unreadable)
            done, locked = await apply_unless_locked(backend, rows, budget)
            written += done
            # Locked, or left once the budget went: parked, for the daemons' sweeps.
            await parked.park([row for row in rows if row.job_id in locked])
        written += await replace_rows_ahead(queue, backend, part, budget)  # keeps real ones
        total.merge(part)
        cursor = part.cursor
        if cursor == 0:
            break
    after = ""
    while True:
        lost, changed, next_after = await fail_lost_rows(
            queue, backend, after, limit=page, lost_after_s=lost_after_s, budget=LockBudget()
        )
        total.lost += lost
        written += changed
        if not next_after or next_after == after:  # the end, or put off
            break
        after = next_after
    return SyncReport(
        store=backend.name,
        checked=total.checked,
        missing=total.missing,
        behind=total.behind,
        ahead=total.ahead,
        foreign=total.foreign,
        lost=total.lost,
        written=written,
        unreadable=unreadable,
    )
