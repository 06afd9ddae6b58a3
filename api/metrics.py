"""GET /metrics of the API process: the shared registry, queue gauges refreshed at scrape."""

from __future__ import annotations

import logging

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from supervisor.metricdefs import REGISTRY, refresh_queue_gauges
from supervisor.queue.jobqueue import JobQueue

log = logging.getLogger(__name__)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class MetricsEndpoint:
    async def render(self, q: JobQueue, timeout_s: float) -> bytes:
        # A scrape still answers when Redis is slow or paused: redis_up 0, other gauges
        # with their last values, removed once Redis has been unreadable for a minute.
        await refresh_queue_gauges(q, timeout_s=timeout_s)
        return generate_latest(REGISTRY)
