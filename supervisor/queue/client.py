"""Enqueue an ingestion job from another Python service, straight to Redis.

The counterpart of the `queueIngestionJob` helper web apps use: same payload, same
validation, same idempotency on `job_id` as `POST /jobs` (which is what a service without
Redis access calls instead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from supervisor.config import SharedConfig, load_shared_config
from supervisor.queue.connection import AnyRedis
from supervisor.queue.jobqueue import EnqueueResult


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
    """The raw payload; enqueue validates it (a None field counts as absent) and stores
    the normalised form."""
    return {
        "job_id": job_id,
        "tenant_id": tenant_id,
        "data_source": data_source,
        "priority": priority,
        "metadata": metadata,
        "timeout_s": timeout_s,
        "max_attempts": max_attempts,
        "trial_token": trial_token,
    }


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
    client: AnyRedis | None = None,
    redis_url: str | None = None,
    config: SharedConfig | None = None,
) -> EnqueueResult:
    """Validate and enqueue one job; `created` is False when `job_id` already exists.

    Raises `supervisor.queue.payload.PayloadError` (naming the field and rule) for an invalid
    payload, and its subclass `TenantConflict` when `job_id` exists for another tenant; in
    both cases nothing is stored. `trial_token` (the old producer's secret) reaches the
    child in its job JSON and is redacted everywhere else. Pass `client` to reuse a connection
    pool; otherwise one is opened and closed. Where Redis is and the default queue come from
    `config`, else from the environment (`supervisor.config`: REDIS_URL or RAG_REDIS_URL,
    INGEST_REDIS_CLUSTER, INGEST_REDIS_SENTINELS, INGEST_QUEUE); `redis_url` and `queue`
    override them.
    """
    payload = _payload(
        job_id, tenant_id, data_source, priority, metadata, timeout_s, max_attempts, trial_token
    )
    config = config if config is not None else load_shared_config()
    if redis_url is not None:
        config = replace(config, redis_url=redis_url)
    name = queue or config.queue
    own = client is None
    conn = client if client is not None else config.redis()
    try:
        return await replace(config, queue=name).job_queue(conn).enqueue(payload, delay_s=delay_s)
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
    config: SharedConfig | None = None,
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
            config=config,
        )
    )
