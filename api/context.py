"""The Redis clients and queue handles one API process holds, built at startup.

Three clients, so that one kind of traffic can never starve another of connections:
requests, health checks (tiny timeouts, no retries, a small capped pool that raises rather
than waits when full) and server-sent event streams (each holds a connection in XREAD BLOCK).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from api.metrics import MetricsEndpoint
from api.settings import EVENTS_POOL_CONNECTIONS, ApiSettings
from api.streams import StreamSlots
from supervisor.queue.connection import AnyRedis
from supervisor.queue.jobqueue import JobQueue

T = TypeVar("T")

REQUEST_TIMEOUT_S = 5.0
EVENTS_BLOCK_MS = 1000


@dataclass
class ApiContext:
    settings: ApiSettings
    client: AnyRedis
    health_client: AnyRedis
    events_client: AnyRedis
    queue: JobQueue
    health_queue: JobQueue
    events_queue: JobQueue
    metrics: MetricsEndpoint
    streams: StreamSlots  # /events streams open per tenant, and without a token
    # Fire-and-forget tasks (abandoned health probes) kept referenced until done.
    background: set[asyncio.Task[object]] = field(default_factory=set)

    def spawn(self, coro: Awaitable[object]) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def aclose(self) -> None:
        for task in list(self.background):
            task.cancel()
        for client in (self.client, self.health_client, self.events_client):
            await client.aclose()


def build_context(settings: ApiSettings) -> ApiContext:
    # The clients reach the queue's Redis whatever its topology (server, Cluster, Sentinel).
    client = settings.redis(
        connect_timeout=2.0,
        socket_timeout=REQUEST_TIMEOUT_S,
        # One quick retry survives a connection dropped by a Redis restart.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        max_connections=256,
    )
    t = settings.health_timeout_s
    health_client = settings.redis(
        connect_timeout=t,
        socket_timeout=t,
        retry=Retry(NoBackoff(), 0),
        max_connections=32,
    )
    events_client = settings.redis(
        connect_timeout=2.0,
        socket_timeout=EVENTS_BLOCK_MS / 1000 + REQUEST_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        max_connections=EVENTS_POOL_CONNECTIONS,
    )

    def queue(c: AnyRedis) -> JobQueue:
        return settings.job_queue(c)

    return ApiContext(
        settings=settings,
        client=client,
        health_client=health_client,
        events_client=events_client,
        queue=queue(client),
        health_queue=queue(health_client),
        events_queue=queue(events_client),
        metrics=MetricsEndpoint(),
        streams=StreamSlots(settings.max_streams_per_tenant, settings.max_anonymous_streams),
    )


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


async def bounded(coro: Awaitable[T], timeout_s: float = REQUEST_TIMEOUT_S) -> T:
    """A Redis call with a hard deadline, so no request waits on a hung server for long."""
    return await asyncio.wait_for(coro, timeout_s)
