"""The daemon's metric writers and its `/metrics` server (the metrics themselves are
defined in `supervisor.metricdefs`):
- `MetricsSink`, a JobSink: outcomes, durations, child peak RSS, progress and output counts;
- `DaemonMetrics`: what only the daemon knows (slots, leases, stalled recoveries, the
  status outbox and its projection, trace export failures).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from supervisor.events import (
    OUTCOME_STALLED,
    JobFinished,
    JobProgress,
    JobStarted,
)
from supervisor.metricdefs import REGISTRY, metrics_for, record_trace_export_failure


class MetricsSink:
    """A JobSink counting outcomes; every method is a few in-memory increments."""

    def __init__(self, queue: str, registry: CollectorRegistry | None = None) -> None:
        self.queue = queue
        self.m = metrics_for(registry)
        # Children of every outcome appear as series at 0 from the start, so rate() and
        # alerts work before the first failure happens.
        for status in ("completed", "failed", "retried", "timeout", "cancelled", "stalled"):
            self.m.jobs.labels(queue, status)
        for result in ("parsed", "rejected"):
            self.m.progress_lines.labels(queue, result)
        self.m.dropped_bytes.labels(queue)

    def job_started(self, event: JobStarted) -> None:
        self.m.wait.labels(self.queue).observe(max(0.0, event.started_at - event.enqueued_at))

    def job_progress(self, event: JobProgress) -> None:
        # Progress lines are counted once per attempt from JobFinished, parsed and rejected alike.
        return None

    def job_finished(self, event: JobFinished) -> None:
        q, m = self.queue, self.m
        m.jobs.labels(q, event.outcome).inc()
        m.duration.labels(q, event.outcome).observe(event.duration_s)
        if event.final and event.table_status:
            m.ingestion_jobs.labels(event.table_status).inc()
        if event.peak_rss_bytes is not None:
            m.peak_rss.labels(q).observe(event.peak_rss_bytes)
        if event.cpu_seconds:
            m.child_cpu.labels(q).inc(event.cpu_seconds)
        if event.progress_lines:
            m.progress_lines.labels(q, "parsed").inc(event.progress_lines)
        if event.progress_rejected:
            m.progress_lines.labels(q, "rejected").inc(event.progress_rejected)
        if event.dropped_output_bytes:
            m.dropped_bytes.labels(q).inc(event.dropped_output_bytes)

    async def aclose(self, timeout_s: float) -> None:
        return None


class DaemonMetrics:
    """What the daemon reports directly; each method is an in-memory update."""

    def __init__(self, queue: str, registry: CollectorRegistry | None = None) -> None:
        self.queue = queue
        self.m = metrics_for(registry)
        m = self.m
        for series in (
            m.lease_renewals,
            m.lease_losses,
            m.stalled,
            m.outbox_entries,
            m.outbox_unprojected,
            m.outbox_age,
            m.status_write_failures,
            m.status_rows_rejected,
        ):
            series.labels(queue)
        m.jobs.labels(queue, OUTCOME_STALLED)
        # Unread until a refresh reads Redis: a daemon started during an outage says so,
        # and the alert on this gauge has a series to fire on.
        m.redis_up.labels(queue).set(0)

    def set_slots(self, busy: int, idle: int) -> None:
        self.m.slots.labels(self.queue, "busy").set(busy)
        self.m.slots.labels(self.queue, "idle").set(idle)

    def lease_renewed(self) -> None:
        self.m.lease_renewals.labels(self.queue).inc()

    def lease_lost(self) -> None:
        self.m.lease_losses.labels(self.queue).inc()

    def stalled_recovered(self, n: int) -> None:
        """`n` jobs of dead holders were recovered by the reaper.

        Also counted as `queue_jobs_total{status="stalled"}`: the reaper's recoveries are
        finished attempts no JobFinished reports.
        """
        if n > 0:
            self.m.stalled.labels(self.queue).inc(n)
            self.m.jobs.labels(self.queue, OUTCOME_STALLED).inc(n)

    def status_request(self, rows: int, seconds: float, ok: bool) -> None:
        """One request to the status store (`rows` rows) took `seconds`."""
        self.m.status_write_latency.labels(self.queue).observe(seconds)
        if not ok:
            self.m.status_write_failures.labels(self.queue).inc()

    def status_rows_rejected(self, n: int = 1) -> None:
        self.m.status_rows_rejected.labels(self.queue).inc(n)

    def status_projected(self, lag_s: float) -> None:
        self.m.projection_lag.labels(self.queue).observe(lag_s)

    def status_outbox_bound(self, entries: int) -> None:
        self.m.outbox_bound.labels(self.queue).set(entries)

    def status_outbox(self, entries: int, unprojected: int, age_s: float) -> None:
        self.m.outbox_entries.labels(self.queue).set(entries)
        self.m.outbox_unprojected.labels(self.queue).set(unprojected)
        self.m.outbox_age.labels(self.queue).set(age_s)

    def status_parked(self, rows: int) -> None:
        self.m.parked_rows.labels(self.queue).set(rows)

    def trace_export_failure(self, n: int = 1) -> None:
        record_trace_export_failure(n, self.m.registry)


# ---- serving ----------------------------------------------------------------------


def metrics_port(base: int, instance: int | None) -> int:
    """The port of one process of a pool: `base + instance`; 0 (disabled) stays 0."""
    if base <= 0:
        return 0
    return base + (instance or 0)


@dataclass
class MetricsServer:
    """A running `/metrics` server; call it (or `.stop()`) to stop it."""

    host: str
    port: int
    _server: Any
    _thread: threading.Thread

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __call__(self) -> None:
        self.stop()


def start_metrics_server(
    port: int, host: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve `registry` (default `REGISTRY`) on http://host:port/metrics in a daemon thread.

    Port 0 binds a free ephemeral port (read it from `.port`): "metrics disabled" is the
    caller's decision, made before calling this (see `metrics_port`).
    """
    server, thread = start_http_server(
        port, addr=host, registry=REGISTRY if registry is None else registry
    )
    return MetricsServer(host=host, port=int(server.server_port), _server=server, _thread=thread)
