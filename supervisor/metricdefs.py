"""Every Prometheus metric of the product, defined here and nowhere else, and the queue
gauges (jobs by state, oldest waiting age, live workers) read from Redis by whoever serves
`/metrics` (each daemon and the API), so they are real gauges.

All metrics of a registry are created once (`metrics_for(registry)`); the module-level
`REGISTRY` is what the daemon's and the API's `/metrics` serve. Tests pass their own
`CollectorRegistry` to get isolated series. The daemon's writers are in `supervisor.metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from supervisor.queue.workers import serving

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
        self.unreadable_since: dict[str, float] = {}  # queue -> first failed refresh
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
            "Jobs that reached a final status, by the status their table row shows, "
            "counted when Redis records it (the row follows through the status outbox)",
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
        self.parked_rows = Gauge(
            "ingest_status_parked_rows",
            "Status rows the store would not take for now (a row lock held elsewhere), "
            "kept in Redis for the reconciler to write",
            ["queue"],
            registry=r,
        )
        self.outbox_age = Gauge(
            "ingest_status_outbox_age_seconds",
            "Age of the oldest status outbox entry not yet written to the status table",
            ["queue"],
            registry=r,
        )
        self.outbox_bound = Gauge(
            "ingest_status_outbox_bound",
            "INGEST_STATUS_OUTBOX_MAX: at this many entries progress is no longer recorded",
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
        self.serving_workers = Gauge(
            "queue_serving_workers",
            "Live supervisors that can start jobs (not stopping, children not failing to start)",
            ["queue"],
            registry=r,
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


def record_trace_export_failure(n: int = 1, registry: CollectorRegistry | None = None) -> None:
    """A span batch could not be exported (called from the exporter's thread)."""
    metrics_for(registry).trace_export_failures.inc(n)


# ---- queue gauges -----------------------------------------------------------------


class QueueView(Protocol):
    """What the refresher reads; supervisor.queue.jobqueue.JobQueue provides it."""

    async def counts(self) -> dict[str, int]: ...

    async def oldest_waiting_age_s(self) -> float | None: ...

    async def live_workers(self) -> list[dict[str, Any]]: ...


# A queue unreadable this long has its gauges removed: a process cut off from Redis must
# not show stale counts, and one slow refresh must not reset the alerts' `for:` timers.
STALE_AFTER_S = 60.0


async def refresh_queue_gauges(
    q: QueueView,
    gauges: Metrics | None = None,
    *,
    queue: str | None = None,
    timeout_s: float = 5.0,
    stale_after_s: float = STALE_AFTER_S,
) -> bool:
    """Read the queue's state from Redis into the gauges; False when it fails or takes
    longer than `timeout_s` (a Redis that accepts and never answers): `redis_up` then says
    0, and once the queue has been unreadable `stale_after_s` the other gauges of the
    queue are removed, so that a process cut off from Redis (a partition) shows no stale
    count beside those of the processes that still read it (a daemon's last "1 live
    worker" would hide the API's true 0 from the alerts).

    Never raises: a scrape or an upkeep loop must not break because Redis is away. The
    queue label is `queue` or `q.queue`.
    """
    m = gauges or metrics_for()
    name = queue if queue is not None else str(getattr(q, "queue", "default"))
    try:
        async with asyncio.timeout(timeout_s):
            counts = await q.counts()
            age = await q.oldest_waiting_age_s()
            workers = await q.live_workers()
    except Exception as exc:  # TimeoutError included
        log.debug("queue gauges of %s not refreshed: %s", name, type(exc).__name__)
        m.redis_up.labels(name).set(0)
        now = time.monotonic()
        if now - m.unreadable_since.setdefault(name, now) >= stale_after_s:
            _remove_queue_gauges(m, name)
        return False
    m.unreadable_since.pop(name, None)
    for state in (*QUEUE_STATES, *sorted(set(counts) - set(QUEUE_STATES))):
        m.queue_jobs.labels(name, state).set(counts.get(state, 0))
    m.oldest_waiting.labels(name).set(age or 0.0)
    m.live_workers.labels(name).set(len(workers))
    m.serving_workers.labels(name).set(len(serving(workers)))
    m.live_slots.labels(name).set(sum(_int(w.get("slots")) for w in workers))
    m.redis_up.labels(name).set(1)
    return True


def _remove_queue_gauges(m: Metrics, name: str) -> None:
    """Remove queue `name`'s series from every gauge read from Redis but `redis_up`."""
    states = {
        sample.labels["state"]
        for family in m.queue_jobs.collect()
        for sample in family.samples
        if sample.labels.get("queue") == name
    }
    for state in states:
        with contextlib.suppress(KeyError):
            m.queue_jobs.remove(name, state)
    for gauge in (m.oldest_waiting, m.live_workers, m.serving_workers, m.live_slots):
        with contextlib.suppress(KeyError):
            gauge.remove(name)


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
        await refresh_queue_gauges(q, gauges, queue=queue, timeout_s=max(1.0, interval_s / 2))
        await asyncio.sleep(interval_s)
