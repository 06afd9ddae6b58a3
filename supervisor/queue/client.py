"""Enqueue an ingestion job from another Python service, straight to Redis.

The counterpart of the `queueIngestionJob` helper web apps use: same payload, same
validation, same idempotency on `job_id` as `POST /jobs` (which is what a service without
Redis access calls instead).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from supervisor.queue.jobqueue import EnqueueResult, JobQueue

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "ingest"


def _payload(
    job_id: str,
    tenant_id: str,
    data_source: Mapping[str, Any],
    priority: str,
    metadata: Mapping[str, Any] | None,
    timeout_s: float | None,
    max_attempts: int | None,
    trial_token: str | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "job_id": job_id,
        "tenant_id": tenant_id,
        "data_source": dict(data_source),
        "priority": priority,
    }
    if metadata is not None:
        payload["metadata"] = dict(metadata)
    if timeout_s is not None:
        payload["timeout_s"] = timeout_s
    if max_attempts is not None:
        payload["max_attempts"] = max_attempts
    if trial_token is not None:
        payload["trial_token"] = trial_token
    return payload


def _redis_url(redis_url: str | None) -> str:
    return (
        redis_url
        or os.environ.get("REDIS_URL")
        or os.environ.get("RAG_REDIS_URL")
        or (DEFAULT_REDIS_URL)
    )


async def enqueue_ingestion_job_async(
    job_id: str,
    tenant_id: str,
    data_source: Mapping[str, Any],
    *,
    priority: str = "normal",
    metadata: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    max_attempts: int | None = None,
    trial_token: str | None = None,
    delay_s: float = 0,
    queue: str | None = None,
    client: Redis | None = None,
    redis_url: str | None = None,
) -> EnqueueResult:
    """Validate and enqueue one job; `created` is False when `job_id` already exists.

    Raises `supervisor.queue.payload.PayloadError` (naming the field and rule) for an invalid
    payload, and its subclass `TenantConflict` when `job_id` exists for another tenant; in
    both cases nothing is stored. `trial_token` (the old producer's secret) reaches the
    child in its job JSON and is redacted everywhere else. Pass `client` to reuse a connection pool;
    otherwise one is opened from `redis_url` (else REDIS_URL / RAG_REDIS_URL) and closed.
    """
    payload = _payload(
        job_id, tenant_id, data_source, priority, metadata, timeout_s, max_attempts, trial_token
    )
    name = queue or os.environ.get("INGEST_QUEUE") or DEFAULT_QUEUE
    own = client is None
    conn = client if client is not None else Redis.from_url(_redis_url(redis_url))
    try:
        return await JobQueue(conn, name).enqueue(payload, delay_s=delay_s)
    finally:
        if own:
            await conn.aclose()


def enqueue_ingestion_job(
    job_id: str,
    tenant_id: str,
    data_source: Mapping[str, Any],
    *,
    priority: str = "normal",
    metadata: Mapping[str, Any] | None = None,
    timeout_s: float | None = None,
    max_attempts: int | None = None,
    trial_token: str | None = None,
    delay_s: float = 0,
    queue: str | None = None,
    redis_url: str | None = None,
) -> EnqueueResult:
    """Blocking form of `enqueue_ingestion_job_async`, for code without an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "enqueue_ingestion_job() blocks; inside an event loop await "
            "enqueue_ingestion_job_async() instead"
        )
    return asyncio.run(
        enqueue_ingestion_job_async(
            job_id,
            tenant_id,
            data_source,
            priority=priority,
            metadata=metadata,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            trial_token=trial_token,
            delay_s=delay_s,
            queue=queue,
            redis_url=redis_url,
        )
    )
