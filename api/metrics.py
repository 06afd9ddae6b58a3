"""GET /metrics of the API process: the shared registry, queue gauges refreshed at scrape."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from supervisor.metricdefs import REGISTRY, refresh_queue_gauges
from supervisor.queue.jobqueue import JobQueue

log = logging.getLogger(__name__)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class MetricsEndpoint:
    async def render(self, q: JobQueue, timeout_s: float) -> bytes:
        try:
            await asyncio.wait_for(refresh_queue_gauges(q), timeout_s)
        except TimeoutError:
            # A scrape still answers, with the last values, when Redis is slow or paused.
            log.debug("queue gauges not refreshed within %.1fs", timeout_s)
        return generate_latest(REGISTRY)
