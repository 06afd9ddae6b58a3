"""Rows the store would not take for now because another session holds them locked.

A projector that meets a locked row (SQLSTATE 55P03) does not wait for it: it parks the
job's newest snapshot in the queue's `status:parked_rows` hash (one per job, never
replaced by an older one), then acknowledges the entries like the rest of the batch. The
snapshot itself is kept, not just the job's id: a job can leave Redis (a purge,
retention) while its row is held, and its last row must still be written. The reconciler
writes parked rows straight to the store on each sweep and forgets each one it wrote,
unless a newer one was parked meanwhile. The sweep for jobs Redis lost leaves a job with a
parked row alone: its row is on its way.

The reconciler's own writes (rows ahead of Redis, rows of lost jobs, `status-sync`) skip
a locked row too, rather than failing the whole sweep until the lock is let go.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript

from supervisor.queue.jobqueue import AnyRedis, JobQueue
from supervisor.queue.keys import QueueKeys
from supervisor.queue.records import as_str
from supervisor.queue.scripts import run_script, script_source
from supervisor.redis_retry import why
from supervisor.status.backend import StatusBackend, StatusStoreError
from supervisor.status.outbox import bare_final, rows_from_records
from supervisor.status.update import StatusUpdate

log = logging.getLogger(__name__)

# Parked rows drawn per sweep: each row still locked costs the store's lock timeout (1 s).
PARKED_PER_SWEEP = 20


_COLUMNS = frozenset(f.name for f in dataclasses.fields(StatusUpdate))


class ParkedRows:
    """The queue's parked rows in Redis (see the module's docstring)."""

    def __init__(self, client: AnyRedis, keys: QueueKeys) -> None:
        self.client = client
        self.key = keys.status_parked_rows
        self._park: AsyncScript = client.register_script(script_source("park_rows"))
        self._unpark: AsyncScript = client.register_script(script_source("unpark_row"))

    async def park(self, rows: Sequence[StatusUpdate]) -> None:
        """Keep each job's newest of `rows` (before their entries are acknowledged)."""
        args: list[Any] = []
        for row in rows:
            value = f"{row.seq_run!r} {row.rev}\n{json.dumps(row.to_json())}"
            args += [row.job_id, repr(row.seq_run), row.rev, value]
        if args:
            await run_script(self._park, [self.key], args)

    async def draw(self, count: int) -> list[tuple[StatusUpdate, Any]]:
        """Up to `count` parked rows, at random, each with the value it was kept as (for
        `forget`). Columns this version does not know (a newer daemon's) are left out; a
        value that is no row at all is forgotten with a logged error."""
        raw: Any = await self.client.hrandfield(self.key, count, withvalues=True)
        # RESP3 answers [field, value] pairs, RESP2 one flat list.
        pairs = raw if raw and isinstance(raw[0], list) else zip(raw[::2], raw[1::2], strict=True)
        drawn: list[tuple[StatusUpdate, Any]] = []
        for field, kept in pairs:
            job_id = as_str(field)
            try:
                data = json.loads(as_str(kept).partition("\n")[2])
                row = StatusUpdate(**{k: v for k, v in data.items() if k in _COLUMNS})
            except (TypeError, ValueError, AttributeError) as exc:
                log.error("parked status row of job %s is unreadable (%r); dropped", job_id, exc)
                await self.forget(job_id, kept)
                continue
            drawn.append((row, kept))
        return drawn

    async def forget(self, job_id: str, value: Any) -> None:
        """The row kept as `value` is written: forget it, unless a newer one came."""
        await run_script(self._unpark, [self.key], [job_id, value])

    async def jobs(self) -> set[str]:
        """Jobs with a row parked."""
        return {as_str(name) for name in await self.client.hkeys(self.key)}


# Writes that meet a locked row one step of the reconciler may make: each costs the
# store's lock timeout (1 s), and a lock on the whole table (a migration waiting for
# ACCESS EXCLUSIVE) would lock every row.
LOCKED_PER_SWEEP = 3


@dataclass
class LockBudget:
    """How many more writes that meet a locked row one step may make (see above)."""

    left: int = LOCKED_PER_SWEEP


async def apply_unless_locked(
    backend: StatusBackend, rows: list[StatusUpdate], budget: LockBudget
) -> tuple[int, set[str]]:
    """Write `rows`; when one of them is locked by another session, write them one by one
    and leave the locked ones, and all the rest once `budget` is spent. Rows written, and
    the jobs whose rows were left."""
    if budget.left <= 0:
        return 0, {row.job_id for row in rows}
    try:
        return await backend.apply(rows), set()
    except StatusStoreError as exc:
        if not exc.row_locked:
            raise
        budget.left -= 1
    written = 0
    left: set[str] = set()
    for row in rows:
        if budget.left <= 0:
            left.add(row.job_id)
            continue
        try:
            written += await backend.apply([row])
        except StatusStoreError as exc:
            if not exc.row_locked:
                raise
            budget.left -= 1
            left.add(row.job_id)
    if left:
        log.info(
            "status rows of %d job(s) left for now (locked by another session), e.g. %s",
            len(left),
            ", ".join(sorted(left)[:5]),
        )
    return written, left


async def _write_held_row(backend: StatusBackend, row: StatusUpdate) -> bool | None:
    """One parked row to the store: True written, False refused for good (a final row is
    then tried without the child's texts, as the projector does), None still not
    writable (locked, or the store away)."""
    try:
        await backend.apply([row])
    except StatusStoreError as exc:
        if not exc.permanent:
            log.info("parked status row of job %s still not written (%s)", row.job_id, why(exc))
            return None
        bare = bare_final(row)
        if row.final and bare != row:
            with contextlib.suppress(StatusStoreError):
                await backend.apply([bare])
        log.error("status store refused the parked row of job %s; skipped", row.job_id)
        return False
    except Exception as exc:
        log.info("parked status row of job %s still not written (%s)", row.job_id, why(exc))
        return None
    return True


async def write_parked(queue: JobQueue, backend: StatusBackend) -> int:
    """Write up to PARKED_PER_SWEEP parked rows straight to the store (projectors busy with
    the outbox are not involved) and forget each one written or refused for good. How
    many were written."""
    parked = ParkedRows(queue.client, queue.keys)
    written = 0
    budget = LockBudget()  # rows still not writable: once spent, the rest waits
    for row, value in await parked.draw(PARKED_PER_SWEEP):
        done = await _write_held_row(backend, row)
        if done is None:
            budget.left -= 1
            if budget.left <= 0:
                break
            continue
        written += done
        await parked.forget(row.job_id, value)
    written += await _write_parked_by_id(queue, backend)
    if written:
        log.info("status rows of %d parked job(s) written", written)
    return written


async def _write_parked_by_id(queue: JobQueue, backend: StatusBackend) -> int:
    """Jobs an earlier version parked by id alone (`status:parked`): their current rows,
    made from the job records. Nothing is added to that set any more."""
    raw: Any = await queue.client.srandmember(queue.keys.status_parked, PARKED_PER_SWEEP)
    ids = [as_str(j) for j in raw or []]
    if not ids:
        return 0
    rows = rows_from_records(await queue.status_rows(ids), queue.queue)
    gone = set(ids) - {row.job_id for row in rows}
    if gone:  # left Redis while parked: its last row cannot be made
        log.warning(
            "parked status rows of %d job(s) that left Redis are not written, e.g. %s",
            len(gone),
            ", ".join(sorted(gone)[:5]),
        )
        await queue.client.srem(queue.keys.status_parked, *gone)
    written = 0
    for row in rows:
        done = await _write_held_row(backend, row)
        if done is None:
            break  # still locked, or the store away: the rest waits for the next sweep
        written += done
        await queue.client.srem(queue.keys.status_parked, row.job_id)
    return written
