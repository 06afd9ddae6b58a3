"""Metrics end to end: events into the sink, scraped over real HTTP, parsed, linted by promtool."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from supervisor import events as ev
from supervisor.metrics import (
    DaemonMetrics,
    MetricsSink,
    start_metrics_server,
)

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
MIB = 1024 * 1024


def finished(outcome: str, *, duration: float, **kw: Any) -> ev.JobFinished:
    final = outcome in ("completed", "failed", "cancelled") or kw.pop("final", False)
    table = {"completed": "completed", "failed": "failed", "cancelled": "cancelled"}.get(
        outcome, kw.pop("table_status", "queued")
    )
    base: dict[str, Any] = dict(
        queue="q1",
        job_id=f"job-{outcome}-{duration}",
        tenant_id="t1",
        attempt=1,
        max_attempts=3,
        worker_id="w1",
        outcome=outcome,
        table_status=table,
        final=final,
        enqueued_at=1000.0,
        started_at=1001.0,
        finished_at=1001.0 + duration,
    )
    base.update(kw)
    return ev.JobFinished(**base)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    series: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return series[(name, frozenset(labels.items()))]


def promtool_check(text: str) -> None:
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    report = (proc.stdout + proc.stderr).decode().strip()
    assert proc.returncode == 0 and not report, f"promtool check metrics:\n{report}"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


@pytest.fixture
def server(registry: CollectorRegistry) -> Iterator[int]:
    srv = start_metrics_server(0, "127.0.0.1", registry=registry)
    yield srv.port
    srv()


def test_known_mix_of_outcomes_is_scraped_exactly(registry: CollectorRegistry, server: int) -> None:
    sink = MetricsSink("q1", registry=registry)
    daemon = DaemonMetrics("q1", registry=registry)
    sink.job_started(
        ev.JobStarted(
            queue="q1",
            job_id="a",
            tenant_id="t1",
            attempt=1,
            max_attempts=3,
            worker_id="w1",
            payload={},
            enqueued_at=1000.0,
            started_at=1003.0,
        )
    )
    sink.job_progress(
        ev.JobProgress(
            queue="q1", job_id="a", tenant_id="t1", attempt=1, progress=5.0, message=None, at=1004.0
        )
    )
    sink.job_finished(
        finished(
            "completed",
            duration=0.5,
            peak_rss_bytes=20 * MIB,
            progress_lines=3,
            progress_rejected=1,
            cpu_seconds=0.25,
        )
    )
    sink.job_finished(
        finished("completed", duration=40.0, peak_rss_bytes=300 * MIB, progress_lines=2)
    )
    sink.job_finished(finished("retried", duration=3.0, dropped_output_bytes=4096))
    sink.job_finished(finished("timeout", duration=310.0, table_status="queued"))
    sink.job_finished(finished("timeout", duration=301.0, final=True, table_status="failed"))
    sink.job_finished(finished("failed", duration=2.0, exit_code=65))
    sink.job_finished(finished("cancelled", duration=1.5))
    sink.job_finished(finished("lease_lost", duration=9.0, table_status=""))
    sink.job_finished(finished("released", duration=4.0))
    daemon.set_slots(busy=1, idle=3)
    daemon.lease_renewed()
    daemon.lease_renewed()
    daemon.lease_lost()
    daemon.stalled_recovered(2)
    daemon.stalled_recovered(0)
    daemon.trace_export_failure()
    daemon.status_request(10, 0.02, True)
    daemon.status_request(10, 0.5, False)
    daemon.status_rows_rejected(1)
    daemon.status_projected(0.03)
    daemon.status_outbox(entries=7, unprojected=3, age_s=2.5)

    text = scrape(server)
    s = samples(text)
    jobs = {
        st: value(s, "queue_jobs_total", queue="q1", status=st)
        for st in (
            "completed",
            "retried",
            "timeout",
            "failed",
            "cancelled",
            "lease_lost",
            "released",
            "stalled",
        )
    }
    assert jobs == {
        "completed": 2,
        "retried": 1,
        "timeout": 2,
        "failed": 1,
        "cancelled": 1,
        "lease_lost": 1,
        "released": 1,
        "stalled": 2,
    }
    # Final outcomes by the status the table shows; a retried timeout is not final.
    assert value(s, "ingestion_jobs_total", status="completed") == 2
    assert value(s, "ingestion_jobs_total", status="failed") == 2
    assert value(s, "ingestion_jobs_total", status="cancelled") == 1
    assert ("ingestion_jobs_total", frozenset({("status", "queued")})) not in s

    d = "queue_job_duration_seconds"
    assert value(s, f"{d}_count", queue="q1", status="completed") == 2
    assert value(s, f"{d}_sum", queue="q1", status="completed") == pytest.approx(40.5)
    assert value(s, f"{d}_bucket", queue="q1", status="completed", le="1.0") == 1
    assert value(s, f"{d}_bucket", queue="q1", status="completed", le="60.0") == 2
    assert value(s, f"{d}_bucket", queue="q1", status="timeout", le="300.0") == 0
    assert value(s, f"{d}_bucket", queue="q1", status="timeout", le="600.0") == 2
    assert value(s, f"{d}_bucket", queue="q1", status="timeout", le="7200.0") == 2
    assert value(s, "queue_job_wait_seconds_sum", queue="q1") == pytest.approx(3.0)

    rss = "ingest_child_peak_rss_bytes"
    assert value(s, f"{rss}_count", queue="q1") == 2
    assert value(s, f"{rss}_bucket", queue="q1", le=floatToGoString(32 * MIB)) == 1
    assert value(s, f"{rss}_bucket", queue="q1", le=floatToGoString(512 * MIB)) == 2
    assert value(s, "ingest_child_cpu_seconds_total", queue="q1") == pytest.approx(0.25)
    assert value(s, "ingest_progress_lines_total", queue="q1", result="parsed") == 5
    assert value(s, "ingest_progress_lines_total", queue="q1", result="rejected") == 1
    assert value(s, "ingest_output_dropped_bytes_total", queue="q1") == 4096

    assert value(s, "ingest_slots", queue="q1", state="busy") == 1
    assert value(s, "ingest_slots", queue="q1", state="idle") == 3
    assert value(s, "ingest_lease_renewals_total", queue="q1") == 2
    assert value(s, "ingest_lease_losses_total", queue="q1") == 1
    assert value(s, "ingest_stalled_recoveries_total", queue="q1") == 2
    assert value(s, "ingest_trace_export_failures_total") == 1
    assert value(s, "ingest_status_outbox_entries", queue="q1") == 7
    assert value(s, "ingest_status_outbox_unprojected", queue="q1") == 3
    assert value(s, "ingest_status_outbox_age_seconds", queue="q1") == 2.5
    assert value(s, "ingest_status_write_failures_total", queue="q1") == 1
    assert value(s, "ingest_status_rows_rejected_total", queue="q1") == 1
    assert value(s, "ingest_status_write_seconds_count", queue="q1") == 2
    assert value(s, "ingest_status_projection_lag_seconds_count", queue="q1") == 1
    promtool_check(text)


def test_series_exist_at_zero_before_any_job(registry: CollectorRegistry, server: int) -> None:
    MetricsSink("q0", registry=registry)
    DaemonMetrics("q0", registry=registry)
    s = samples(scrape(server))
    for status in ("completed", "failed", "retried", "timeout", "cancelled", "stalled"):
        assert value(s, "queue_jobs_total", queue="q0", status=status) == 0
    assert value(s, "ingest_lease_losses_total", queue="q0") == 0
    assert value(s, "ingest_status_outbox_age_seconds", queue="q0") == 0
    assert value(s, "ingest_status_write_failures_total", queue="q0") == 0
