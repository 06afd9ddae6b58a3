"""The reconciler: find status rows that are missing or behind Redis.

The outbox makes every change durable, but entries can still be lost outside our control:
a Redis failover that drops the last writes, an operator's `XTRIM`, rows refused while a
store's migration was missing. A sweep compares a bounded page of job records (only their
run, revision and tenant leave Redis) with their rows and names the jobs whose row is
missing or older than the record. The periodic sweep (one daemon at a time, a short lock in
Redis) re-sends those through the outbox; its scan cursor is kept in Redis, so successive
sweeps by any daemon walk the whole job hash. `ingestctl status-sync` walks it from the
start with a cursor of its own.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

from supervisor.queue.jobqueue import JobQueue
from supervisor.queue.records import as_str
from supervisor.queue.states import JobState, table_status
from supervisor.status.backend import RowVersion, StatusBackend
from supervisor.status.lost import LOST_AFTER_S, fail_lost_rows
from supervisor.status.outbox import rows_from_records
from supervisor.status.parked import LockBudget, apply_unless_locked
from supervisor.status.trim import entry_id_key, outbox_state

log = logging.getLogger(__name__)

CURSOR_FIELD = "cursor"
LOST_CURSOR_FIELD = "lost_cursor"
# Claim times are whole milliseconds of Redis's clock; a row holds them to the microsecond.
CLAIM_TIME_TOLERANCE_S = 0.0005
# A running job's row trails its record by its throttled progress rows, and the last of
# them lands within a second or so of the change. A row still behind a change older than
# this lost that row (dropped at the outbox bound, trimmed) and is re-sent.
TRAILING_ROW_S = 10.0


@dataclass
class ReconcileReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # no row at all
    behind: list[str] = field(default_factory=list)  # a row older than the record
    # A row newer than the record in its run, or as new with another status: Redis lost its
    # last writes (and may have reached the same revision again since). `seen` is each
    # such row's key, status and start as read.
    ahead: list[str] = field(default_factory=list)
    seen: dict[str, tuple[float, int, str, float | None]] = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)  # the row belongs to another tenant
    lost: list[str] = field(default_factory=list)  # unsettled rows of jobs Redis lost: failed
    cursor: int = 0  # where the next page starts; 0 once the scan went round

    @property
    def stale(self) -> list[str]:
        return self.missing + self.behind

    def merge(self, other: ReconcileReport) -> None:
        self.checked += other.checked
        self.missing += other.missing
        self.behind += other.behind
        self.ahead += other.ahead
        self.seen.update(other.seen)
        self.foreign += other.foreign
        self.lost += other.lost
        self.cursor = other.cursor


async def take_lock(queue: JobQueue, owner: str, ttl_s: float) -> bool:
    """The sweep lock, held until it expires: at most one sweep per `ttl_s` fleet-wide."""
    got = await queue.client.set(
        queue.keys.status_reconcile_lock, owner, nx=True, px=max(1, int(ttl_s * 1000))
    )
    return bool(got)


def _trails_by_design(
    row: RowVersion, run: float, state: str, attempt: int, started: float | None
) -> bool:
    """A running job's row behind its record only in progress (progress rows are
    throttled; the last one trails the change). One that does not say it runs, or says so
    of another run, attempt or claim (a stalled claim gives its attempt back, so the next
    claim runs the same attempt), lost its claim's row."""
    return (
        state == "active"
        and row.status == "processing"
        and (row.seq_run, row.attempt) == (run, attempt)
        and _same_start(row.started_at, started)
    )


def _same_start(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) < CLAIM_TIME_TOLERANCE_S


def _not_its_snapshot(row: RowVersion, state: str, started: float | None) -> bool:
    """A row at the record's own revision that is not the record's snapshot (Redis reached
    that revision again after losing writes, its clock stepped back): another status, or
    another claim's. False for a state this version does not know."""
    shown = _shown(state)
    return shown is not None and (shown != row.status or not _same_start(row.started_at, started))


def _shown(state: str) -> str | None:
    """The status a row shows for a record in `state` (None for a state this version
    does not know)."""
    try:
        return table_status(JobState(state))
    except ValueError:
        return None


async def compare_page(
    queue: JobQueue,
    backend: StatusBackend,
    cursor: int,
    *,
    limit: int,
    trailing_row_s: float = TRAILING_ROW_S,
    leave_waiting: bool = False,
) -> ReconcileReport:
    """Compare about `limit` job records from `cursor` on with their rows. With
    `leave_waiting`, a row whose job's last change still waits in the outbox is not
    reported missing or behind (the periodic sweep: the projector will write it)."""
    report = ReconcileReport()
    # Revisions are Redis's clock in milliseconds: a record's is when it last changed. A
    # change is settled once its trailing row had time to land, and everything the outbox
    # held from before it has been projected (a slow store is not a dropped row).
    settled_rev = await queue.server_time_ms() - trailing_row_s * 1000
    pending = (await outbox_state(queue.client, queue.keys.status_outbox)).oldest_unprojected_ms
    if pending is not None:
        settled_rev = min(settled_rev, pending)
    # Changes from `pending` up to the outbox's newest entry may still wait there (Redis 7
    # goes on counting entries an XTRIM took as undelivered: only what the outbox still
    # holds counts); their rows are the projector's to write, not ours to send again.
    waiting: tuple[int, int] | None = None
    if leave_waiting and pending is not None:
        newest = await queue.client.xrevrange(queue.keys.status_outbox, count=1)
        if newest and newest[0][0] is not None:
            waiting = (pending, entry_id_key(as_str(newest[0][0]))[0])
    records: dict[str, tuple[str, float, int, str, int, float | None]] = {}
    while True:
        cursor, page = await queue.status_versions(cursor, min(limit, 500))
        for job_id, tenant, run, rev, state, attempt, started in page:
            records[job_id] = (tenant, run, rev, state, attempt, started)
        if cursor == 0 or len(records) >= limit:
            break
    report.cursor = cursor
    report.checked = len(records)
    if not records:
        return report
    rows = await backend.fetch_versions(list(records))
    for job_id, (tenant, run, rev, state, attempt, started) in records.items():
        row = rows.get(job_id)
        if (
            waiting is not None
            and waiting[0] <= rev <= waiting[1]
            and (row is None or (row.seq_run, row.rev) < (run, rev))
        ):
            continue  # its last change still waits in the outbox, behind a slow store
        if row is None:
            report.missing.append(job_id)
        elif row.tenant_id != tenant:
            report.foreign.append(job_id)
        elif (row.seq_run, row.rev) < (run, rev) and not (
            rev > settled_rev and _trails_by_design(row, run, state, attempt, started)
        ):
            report.behind.append(job_id)
        elif (row.seq_run > run and row.queue == queue.queue) or (
            row.seq_run == run
            and (row.rev > rev or (row.rev == rev and _not_its_snapshot(row, state, started)))
        ):
            # Lost writes restart the run's revisions, or take back the run they started
            # (an operator's retry). A later run's row that does not name this queue is
            # left: it may come from another queue that shares the table.
            report.ahead.append(job_id)
            report.seen[job_id] = (row.seq_run, row.rev, row.status, row.started_at)
    if report.foreign:
        log.warning(
            "status rows of %d job(s) belong to another tenant and are left as they are "
            "(a job id reused across tenants), e.g. %s",
            len(report.foreign),
            ", ".join(report.foreign[:5]),
        )
    return report


async def replace_rows_ahead(
    queue: JobQueue, backend: StatusBackend, report: ReconcileReport, budget: LockBudget
) -> int:
    """Write Redis's current row over each row ahead of its record, where the stored row
    still has the key the comparison saw (a row changed since is left to the next sweep).
    Straight to the store: the outbox's snapshots are applied only when newer. A row that
    was only projected between the two reads of the comparison is not ahead of Redis's
    record now, and is dropped from `report.ahead`."""
    written = 0
    confirmed: list[str] = []
    locked: set[str] = set()
    for start in range(0, len(report.ahead), 200):
        fields = await queue.status_rows(report.ahead[start : start + 200])
        rows = []
        for row in rows_from_records(fields, queue.queue):
            run, rev, status, started = report.seen[row.job_id]
            same_run_back = row.seq_run == run and (
                (row.rev, row.status) != (rev, status) or not _same_start(row.started_at, started)
            )
            if row.seq_run < run or (same_run_back and row.rev <= rev):
                confirmed.append(row.job_id)
                rows.append(dataclasses.replace(row, replaces_seq_run=run, replaces_rev=rev))
        if rows:
            done, left = await apply_unless_locked(backend, rows, budget)
            written += done
            locked |= left
    # A locked row is left to a later sweep, which finds it ahead again.
    report.ahead = [job_id for job_id in confirmed if job_id not in locked]
    if report.ahead:
        log.warning(
            "status rows of %d job(s) were ahead of Redis (it lost its last writes); "
            "replaced %d with Redis's%s, e.g. %s",
            len(report.ahead),
            written,
            "" if written else " (none: is migration 20261201000500 applied?)",
            ", ".join(report.ahead[:5]),
        )
    return written


async def sweep_page(
    queue: JobQueue,
    backend: StatusBackend,
    *,
    limit: int,
    lost_after_s: float = LOST_AFTER_S,
    trailing_row_s: float = TRAILING_ROW_S,
) -> ReconcileReport:
    """The periodic sweep: one page from the fleet's shared cursor; re-sends the stale
    rows through the outbox, replaces rows ahead of Redis, and fails one page of rows of
    jobs Redis lost (a cursor of their own, through the table)."""
    keys = queue.keys
    raw = await queue.client.hget(keys.status_reconcile, CURSOR_FIELD)
    report = await compare_page(
        queue,
        backend,
        int(raw or 0),
        limit=limit,
        trailing_row_s=trailing_row_s,
        leave_waiting=True,
    )
    await queue.client.hset(keys.status_reconcile, CURSOR_FIELD, str(report.cursor))
    if report.stale:
        resent = await queue.resend_status(report.stale)
        log.warning(
            "status reconciler re-sent %d rows (missing: %d, behind: %d), e.g. %s",
            resent,
            len(report.missing),
            len(report.behind),
            ", ".join(report.stale[:5]),
        )
    budget = LockBudget()  # shared by this sweep's writes straight to the store
    await replace_rows_ahead(queue, backend, report, budget)
    raw = await queue.client.hget(keys.status_reconcile, LOST_CURSOR_FIELD)
    after = raw.decode() if isinstance(raw, bytes) else raw or ""
    report.lost, _, after = await fail_lost_rows(
        queue, backend, after, limit=limit, lost_after_s=lost_after_s, budget=budget
    )
    await queue.client.hset(keys.status_reconcile, LOST_CURSOR_FIELD, after)
    return report
