"""A store that takes every row slowly (a busy database after an outage): a request that
times out is split at once, and later requests stay small enough to be written in time,
so a backlog drains at the store's pace instead of timing out on every full batch."""

from __future__ import annotations

import psycopg

from supervisor.status import build_status_backend
from supervisor.status.reporting import ProjectorHooks, ProjectorStats
from supervisor.status.row_writer import RowWriter
from supervisor.status.update import StatusUpdate

ROW_SLEEP_S = 0.002
TIMEOUT_S = 0.9  # 600 rows take 1.2 s of sleeping alone; 300 take 0.6 s


def _slow_rows(dsn: str, on: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("drop trigger if exists slow_row on public.ingestion_jobs")
        if on:
            conn.execute(
                "create or replace function public.slow_row() returns trigger"
                f" language plpgsql as $$ begin perform pg_sleep({ROW_SLEEP_S}); return new; end $$"
            )
            conn.execute(
                "create trigger slow_row before insert or update on public.ingestion_jobs"
                " for each row execute function public.slow_row()"
            )


def _rows(prefix: str, n: int) -> list[StatusUpdate]:
    return [StatusUpdate(f"{prefix}-{i}", "t1", "queued", seq_run=1.0, rev=1) for i in range(n)]


async def test_a_backlog_drains_in_requests_a_slow_store_takes_in_time(status_db: str) -> None:
    requests: list[tuple[int, bool]] = []
    hooks = ProjectorHooks(on_request=lambda n, _s, ok: requests.append((n, ok)))
    backend = build_status_backend("postgres", dsn=status_db, timeout_s=TIMEOUT_S)
    writer = RowWriter(
        backend,
        hooks,
        ProjectorStats(),
        request_timeout_s=TIMEOUT_S,
        retry_initial_s=0.05,
        retry_max_s=0.2,
    )
    _slow_rows(status_db, True)
    try:
        assert await writer.write(_rows("first", 600))
        assert await writer.write(_rows("second", 600))
    finally:
        _slow_rows(status_db, False)
        await backend.aclose()
    with psycopg.connect(status_db) as conn:
        stored = conn.execute("select count(*) from public.ingestion_jobs").fetchone()
    assert stored == (1200,)
    timed_out = [n for n, ok in requests if not ok]
    # The first full batch times out once and is split at once; the rest goes in requests
    # of at most half its size (a few more timeouts are the host's slowness, not retries
    # of the same size: before, each size was tried three times before any split).
    assert timed_out[:1] == [600] and len(timed_out) <= 3, requests
    assert writer.request_rows is not None and writer.request_rows <= 300
    after_first = requests[requests.index((600, False)) + 1 :]
    assert all(n <= 300 for n, _ok in after_first), requests
