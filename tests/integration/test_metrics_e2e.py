"""Issue 6, metrics: a real daemon runs a known mix of outcomes; its /metrics is scraped over
HTTP, parsed with prometheus_client's parser, checked series by series and linted by promtool."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from supervisor.queue.states import JobState
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until
from tests.integration.conftest import free_port, metrics_env, stop_daemon
from tests.observability.test_metrics import promtool_check, samples, scrape, value

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Progress lines the scriptable child prints: "1 started" then ten steps.
FULL_RUN_LINES = 11


def _final(q: SyncQueue, job_id: str) -> bool:
    rec = q.get(job_id)
    return rec is not None and rec.state in (JobState.COMPLETED, JobState.FAILED)


def _scrape_until(port: int, pred: Callable[[Series], bool], timeout: float, what: str) -> Series:
    holder: dict[str, Series] = {}

    def check() -> bool:
        holder["s"] = samples(scrape(port))
        return pred(holder["s"])

    wait_until(check, timeout, what, interval=0.2)
    return holder["s"]


def test_scraped_metrics_match_a_known_mix_of_outcomes(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, tmp_path: Path
) -> None:
    port = free_port()
    ids = ["ok-1", "ok-2", "flaky", "bad-input", "slow"]
    q.enqueue_many(
        [
            job("ok-1"),
            job("ok-2"),
            job("flaky", fail_until_attempt=2),  # retried once, then completed
            job("bad-input", exit=65),  # permanent failure, never retried
            job("slow", sleep=60, ignore_term=True, timeout_s=1, max_attempts=1),
        ]
    )
    # A real (sqlite) status store, so the projector's series are fed by real batches.
    daemon = start_daemon(
        **metrics_env(port),
        INGEST_STATUS_BACKEND="sqlite",
        INGEST_STATUS_SQLITE_PATH=str(tmp_path / "status.sqlite3"),
    )
    wait_until(lambda: all(_final(q, i) for i in ids), 40, "every job final")
    assert q.get("flaky").attempt == 2
    assert q.get("slow").state is JobState.FAILED
    # The heartbeat advertises the port it serves on: base port plus instance 0.
    assert [w["metrics_port"] for w in q.live_workers()] == [port]

    name = q.queue

    def outcomes_counted(s: Series) -> bool:
        return (
            sum(
                value(s, "queue_jobs_total", queue=name, status=st)
                for st in ("completed", "retried", "failed", "timeout")
            )
            == 6
            and value(s, "ingest_slots", queue=name, state="busy") == 0
        )

    s = _scrape_until(port, outcomes_counted, 10, "six finished attempts counted")
    expected_jobs = {
        "completed": 3,
        "retried": 1,
        "failed": 1,
        "timeout": 1,
        "cancelled": 0,
        "stalled": 0,
    }
    for status, n in expected_jobs.items():
        assert value(s, "queue_jobs_total", queue=name, status=status) == n, status
    for status, n in expected_jobs.items():
        if n:
            count = value(s, "queue_job_duration_seconds_count", queue=name, status=status)
            assert count == n, status
    # The timed-out attempt ran at least its 1 s timeout.
    assert value(s, "queue_job_duration_seconds_sum", queue=name, status="timeout") >= 1.0
    assert value(s, "ingestion_jobs_total", status="completed") == 3
    assert value(s, "ingestion_jobs_total", status="failed") == 2  # exit 65 and the timeout
    assert value(s, "ingest_slots", queue=name, state="idle") == 2
    assert value(s, "queue_job_wait_seconds_count", queue=name) == 6
    assert value(s, "ingest_child_peak_rss_bytes_count", queue=name) == 6
    # Five complete runs (ok-1, ok-2, both flaky attempts, bad-input) print every line; the
    # timed-out child prints at most its first line (on a slow machine its interpreter may
    # not even get that far within the 1 s timeout).
    parsed = value(s, "ingest_progress_lines_total", queue=name, result="parsed")
    assert parsed in (5 * FULL_RUN_LINES, 5 * FULL_RUN_LINES + 1)
    assert value(s, "ingest_progress_lines_total", queue=name, result="rejected") == 0
    assert value(s, "ingest_lease_losses_total", queue=name) == 0
    assert value(s, "ingest_stalled_recoveries_total", queue=name) == 0
    # The status projection's health (a reachable sqlite store: every request succeeds).
    assert value(s, "ingest_status_write_failures_total", queue=name) == 0
    assert value(s, "ingest_status_write_seconds_count", queue=name) >= 1
    assert value(s, "ingest_status_projection_lag_seconds_count", queue=name) >= 6

    # Queue gauges come from Redis on the daemon's refresh interval (10 s): wait for it.
    def gauges_refreshed(s: Series) -> bool:
        return value(s, "queue_jobs_in_state", queue=name, state="completed") == 3

    s = _scrape_until(port, gauges_refreshed, 25, "queue gauges refreshed from Redis")
    in_state = {"waiting": 0, "delayed": 0, "active": 0, "completed": 3, "failed": 2}
    for state, n in in_state.items():
        assert value(s, "queue_jobs_in_state", queue=name, state=state) == n, state
    assert value(s, "queue_oldest_waiting_job_age_seconds", queue=name) == 0
    assert value(s, "queue_live_workers", queue=name) == 1
    assert value(s, "queue_live_worker_slots", queue=name) == 2
    assert value(s, "queue_metrics_redis_up", queue=name) == 1

    promtool_check(scrape(port))
    stop_daemon(daemon, 20)


def test_a_row_the_store_refuses_is_counted_on_metrics(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, tmp_path: Path
) -> None:
    """An outbox entry no store accepts (an id the table's check refuses) is skipped by the
    projector, and the operator sees it in ingest_status_rows_rejected_total."""
    import redis

    from supervisor.queue.keys import QueueKeys
    from tests.conftest import REDIS_URL

    port = free_port()
    daemon = start_daemon(
        **metrics_env(port),
        INGEST_STATUS_BACKEND="sqlite",
        INGEST_STATUS_SQLITE_PATH=str(tmp_path / "status.sqlite3"),
    )
    daemon.wait_ready()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        bad = {"job": "bad id", "kind": "s", "tenant": "t", "state": "waiting", "rev": "1",
               "run": "1000", "attempt": "0", "max": "3", "progress": "0"}  # fmt: skip
        client.xadd(QueueKeys(q.queue).status_outbox, bad)  # type: ignore[arg-type]
    finally:
        client.close()
    _scrape_until(
        port,
        lambda s: value(s, "ingest_status_rows_rejected_total", queue=q.queue) == 1,
        20,
        "the refused row counted",
    )
    stop_daemon(daemon, 30)
