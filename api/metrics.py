"""GET /metrics for the API process: queue gauges refreshed from Redis at scrape time.

HOOK: `supervisor.metrics` (another engineer's module) is to provide
`refresh_queue_gauges(q, ...)` and the registry its gauges live in. When it is importable
and has both, it is used; until then this module keeps its own small registry with the
same kind of gauges, so /metrics works either way. The lead reconciles the two.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from supervisor.protocol import JobQueue

log = logging.getLogger(__name__)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class QueueGauges:
    """Fallback gauges (used only while supervisor.metrics is not available)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge(
            "queue_jobs", "Jobs in the queue by state", ["queue", "state"], registry=self.registry
        )
        self.oldest = Gauge(
            "queue_oldest_waiting_seconds",
            "Age of the oldest waiting job",
            ["queue"],
            registry=self.registry,
        )
        self.workers = Gauge(
            "queue_live_workers",
            "Supervisors with a live heartbeat",
            ["queue"],
            registry=self.registry,
        )
        self.up = Gauge(
            "ingest_api_redis_up",
            "1 when the last scrape could read Redis",
            ["queue"],
            registry=self.registry,
        )

    async def refresh(self, q: JobQueue) -> None:
        try:
            counts = await q.counts()
            age = await q.oldest_waiting_age_s()
            workers = await q.live_workers()
        except Exception as exc:
            log.debug("queue gauges not refreshed: %s", type(exc).__name__)
            self.up.labels(q.queue).set(0)
            return
        for state, n in counts.items():
            self.jobs.labels(q.queue, state).set(n)
        self.oldest.labels(q.queue).set(age or 0.0)
        self.workers.labels(q.queue).set(len(workers))
        self.up.labels(q.queue).set(1)


class MetricsEndpoint:
    def __init__(self) -> None:
        self._shared: Any = None
        self._fallback: QueueGauges | None = None
        try:
            mod = importlib.import_module("supervisor.metrics")
            refresh = mod.refresh_queue_gauges
            registry = getattr(mod, "REGISTRY", None) or getattr(mod, "registry", None)
            if registry is None or not callable(refresh):
                raise AttributeError("no registry")
            self._shared = (refresh, registry)
        except (ImportError, AttributeError) as exc:
            log.info("supervisor.metrics not usable (%s); serving the API's own gauges", exc)
            self._fallback = QueueGauges()

    @property
    def registry(self) -> CollectorRegistry:
        if self._shared is not None:
            registry: CollectorRegistry = self._shared[1]
            return registry
        assert self._fallback is not None
        return self._fallback.registry

    async def render(self, q: JobQueue, timeout_s: float) -> bytes:
        try:
            if self._shared is not None:
                result = self._shared[0](q)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, timeout_s)
            else:
                assert self._fallback is not None
                await asyncio.wait_for(self._fallback.refresh(q), timeout_s)
        except Exception as exc:
            # A scrape still answers (with the last values) when Redis is slow or down.
            log.debug("metrics refresh failed: %s", type(exc).__name__)
        return generate_latest(self.registry)
