"""Every Prometheus metric of the product, defined here and nowhere else.

Three writers feed them:
- `MetricsSink`, a JobSink: outcomes, durations, child peak RSS, progress and output counts;
- `DaemonMetrics`: what only the daemon knows (slots, leases, stalled recoveries, the
  status outbox and its projection, trace export failures);
- `refresh_queue_gauges`: jobs by state, oldest waiting age and live workers, read from Redis
  by whoever serves `/metrics` (each daemon and the API), so they are real gauges.

All metrics of a registry are created once (`metrics_for(registry)`); the module-level
`REGISTRY` is what the daemon's and the API's `/metrics` serve. Tests pass their own
`CollectorRegistry` to get isolated series.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from supervisor.events import (
    OUTCOME_STALLED,
    JobFinished,
    JobProgress,
    JobStarted,
)

log = logging.getLogger(__name__)

# What `/metrics` of this process serves: our metrics plus the process/platform/gc
# collectors operators expect from a Python service.
REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

# From 1 s up past the default 5 min job timeout (and typical raised timeouts) to 2 h.
DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
WAIT_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)
_MIB = 1024 * 1024
RSS_BUCKETS = tuple(float(m * _MIB) for m in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192))
QUEUE_STATES = ("waiting", "delayed", "active", "completed", "failed", "cancelled")


class Metrics:
    """The metric objects of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        # --- job outcomes (names operators' dashboards and alerts already use) ---
        self.jobs = Counter(
            "queue_jobs", "Finished job attempts by outcome", ["queue", "status"], registry=r
        )
        self.duration = Histogram(
            "queue_job_duration_seconds",
            "Wall time of a job attempt, by outcome",
            ["queue", "status"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ingestion_jobs = Counter(
            "ingestion_jobs",
            "Jobs that reached a final status in the status table",
            ["status"],
            registry=r,
        )
        self.wait = Histogram(
            "queue_job_wait_seconds",
            "Time from enqueue to the start of an attempt",
            ["queue"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        # --- children ---
        self.peak_rss = Histogram(
            "ingest_child_peak_rss_bytes",
            "Peak resident memory of a job's child process tree",
            ["queue"],
            buckets=RSS_BUCKETS,
            registry=r,
        )
        self.child_cpu = Counter(
            "ingest_child_cpu_seconds",
            "CPU time used by job children",
            ["queue"],
            registry=r,
        )
        self.progress_lines = Counter(
            "ingest_progress_lines",
            "PROGRESS lines from children, parsed or rejected as malformed",
            ["queue", "result"],
            registry=r,
        )
        self.dropped_bytes = Counter(
            "ingest_output_dropped_bytes",
            "Child output bytes dropped by the output caps",
            ["queue"],
            registry=r,
        )
        # --- daemon ---
        self.slots = Gauge(
            "ingest_slots", "Job slots of this daemon by state", ["queue", "state"], registry=r
        )
        self.lease_renewals = Counter(
            "ingest_lease_renewals", "Successful lease renewals", ["queue"], registry=r
        )
        self.lease_losses = Counter(
            "ingest_lease_losses",
            "Leases lost (to another holder or to an unreachable Redis)",
            ["queue"],
            registry=r,
        )
        self.stalled = Counter(
            "ingest_stalled_recoveries",
            "Jobs of dead holders recovered by the reaper",
            ["queue"],
            registry=r,
        )
        self.status_write_latency = Histogram(
            "ingest_status_write_seconds",
            "Latency of one batch write to the status store",
            ["queue"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.trace_export_failures = Counter(
            "ingest_trace_export_failures",
            "Span batches that could not be exported to Langfuse",
            registry=r,
        )
        # --- status table: the outbox in Redis and its projection ---
        self.outbox_entries = Gauge(
            "ingest_status_outbox_entries",
            "Entries in the status outbox stream (projected or not; trimmed once acknowledged)",
            ["queue"],
            registry=r,
        )
        self.outbox_unprojected = Gauge(
            "ingest_status_outbox_unprojected",
            "Status outbox entries not yet written to the status table",
            ["queue"],
            registry=r,
        )
        self.outbox_age = Gauge(
            "ingest_status_outbox_age_seconds",
            "Age of the oldest status outbox entry not yet written to the status table",
            ["queue"],
            registry=r,
        )
        self.status_write_failures = Counter(
            "ingest_status_write_failures",
            "Failed requests to the status store (every retry counts)",
            ["queue"],
            registry=r,
        )
        self.status_rows_rejected = Counter(
            "ingest_status_rows_rejected",
            "Status rows the store refused as invalid (logged and skipped)",
            ["queue"],
            registry=r,
        )
        self.projection_lag = Histogram(
            "ingest_status_projection_lag_seconds",
            "From a change recorded in Redis to its row accepted by the status store",
            ["queue"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        # --- queue gauges, read from Redis ---
        self.queue_jobs = Gauge(
            "queue_jobs_in_state", "Jobs in the queue by state", ["queue", "state"], registry=r
        )
        self.oldest_waiting = Gauge(
            "queue_oldest_waiting_job_age_seconds",
            "Age of the oldest job ready to run (0 when none waits)",
            ["queue"],
            registry=r,
        )
        self.live_workers = Gauge(
            "queue_live_workers", "Supervisors with a live heartbeat", ["queue"], registry=r
        )
        self.live_slots = Gauge(
            "queue_live_worker_slots",
            "Job slots of the supervisors with a live heartbeat",
            ["queue"],
            registry=r,
        )
        self.redis_up = Gauge(
            "queue_metrics_redis_up",
            "1 when the last refresh of the queue gauges could read Redis",
            ["queue"],
            registry=r,
        )


_bundles: dict[int, Metrics] = {}
_bundles_lock = threading.Lock()


def metrics_for(registry: CollectorRegistry | None = None) -> Metrics:
    """The metrics of `registry` (default: `REGISTRY`), created on first use."""
    registry = REGISTRY if registry is None else registry
    with _bundles_lock:
        bundle = _bundles.get(id(registry))
        if bundle is None or bundle.registry is not registry:
            bundle = Metrics(registry)
            _bundles[id(registry)] = bundle
        return bundle


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

    def status_outbox(self, entries: int, unprojected: int, age_s: float) -> None:
        self.m.outbox_entries.labels(self.queue).set(entries)
        self.m.outbox_unprojected.labels(self.queue).set(unprojected)
        self.m.outbox_age.labels(self.queue).set(age_s)

    def trace_export_failure(self, n: int = 1) -> None:
        record_trace_export_failure(n, self.m.registry)


def record_trace_export_failure(n: int = 1, registry: CollectorRegistry | None = None) -> None:
    """A span batch could not be exported (called from the exporter's thread)."""
    metrics_for(registry).trace_export_failures.inc(n)


# ---- queue gauges -----------------------------------------------------------------


class QueueView(Protocol):
    """What the refresher reads; supervisor.queue.jobqueue.JobQueue provides it."""

    async def counts(self) -> dict[str, int]: ...

    async def oldest_waiting_age_s(self) -> float | None: ...

    async def live_workers(self) -> list[dict[str, Any]]: ...


async def refresh_queue_gauges(
    q: QueueView,
    gauges: Metrics | None = None,
    *,
    queue: str | None = None,
) -> bool:
    """Read the queue's state from Redis into the gauges; False (gauges kept) when it fails.

    Never raises: a scrape or an upkeep loop must not break because Redis is away. The
    queue label is `queue` or `q.queue`.
    """
    m = gauges or metrics_for()
    name = queue if queue is not None else str(getattr(q, "queue", "default"))
    try:
        counts = await q.counts()
        age = await q.oldest_waiting_age_s()
        workers = await q.live_workers()
    except Exception as exc:
        log.debug("queue gauges of %s not refreshed: %s", name, type(exc).__name__)
        m.redis_up.labels(name).set(0)
        return False
    for state in (*QUEUE_STATES, *sorted(set(counts) - set(QUEUE_STATES))):
        m.queue_jobs.labels(name, state).set(counts.get(state, 0))
    m.oldest_waiting.labels(name).set(age or 0.0)
    m.live_workers.labels(name).set(len(workers))
    m.live_slots.labels(name).set(sum(_int(w.get("slots")) for w in workers))
    m.redis_up.labels(name).set(1)
    return True


def _int(value: object) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


async def run_queue_gauge_refresher(
    q: QueueView,
    interval_s: float = 10.0,
    gauges: Metrics | None = None,
    *,
    queue: str | None = None,
) -> None:
    """Refresh the queue gauges every `interval_s` until cancelled (an upkeep task)."""
    while True:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancel that
            # stops this loop (see supervisor/aio.py).
            async with asyncio.timeout(max(1.0, interval_s)):
                await refresh_queue_gauges(q, gauges, queue=queue)
        except TimeoutError:
            log.debug("queue gauge refresh timed out")
        await asyncio.sleep(interval_s)


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
    port: int, host: str = "0.0.0.0", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve `registry` (default `REGISTRY`) on http://host:port/metrics in a daemon thread.

    Port 0 binds a free ephemeral port (read it from `.port`): "metrics disabled" is the
    caller's decision, made before calling this (see `metrics_port`).
    """
    server, thread = start_http_server(
        port, addr=host, registry=REGISTRY if registry is None else registry
    )
    return MetricsServer(host=host, port=int(server.server_port), _server=server, _thread=thread)
