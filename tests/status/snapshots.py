"""Real status snapshots: a job's life run through the queue on the real Redis, and the
rows its scripts appended to the status outbox."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from supervisor.queue.jobqueue import Backoff, JobQueue
from supervisor.status.outbox import OutboxEntry, parse_entry
from supervisor.status.update import StatusUpdate
from tests.conftest import REDIS_URL

TENANT = "tenant-a"


def payload(job_id: str, tenant: str = TENANT, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "tenant_id": tenant,
        "data_source": {"type": "text", "text": "hello"},
        "max_attempts": 3,
        **extra,
    }


async def outbox_entries(queue: JobQueue) -> list[OutboxEntry]:
    raw = await queue.client.xrange(queue.keys.status_outbox)
    return [parse_entry(eid, fields, queue.queue) for eid, fields in raw]


async def claim_now(queue: JobQueue, worker: str) -> Any:
    got = await queue.claim(worker, lease_s=30, timeout_s=10)
    assert got is not None
    return got


async def job_life(queue: JobQueue, job_id: str) -> list[StatusUpdate]:
    """Attempt 1 fails and is retried; attempt 2 completes. Returns its rows in order."""
    assert (await queue.enqueue(payload(job_id))).created
    c1 = await claim_now(queue, "w1")
    await queue.progress(job_id, c1.token, 30, "reading")
    await queue.fail(job_id, c1.token, "exit 75", retryable=True, attempt=1, peak_rss_bytes=1000)
    c2 = await claim_now(queue, "w2")
    await queue.progress(job_id, c2.token, 50, "embedding")
    await queue.progress(job_id, c2.token, 90, "storing")
    assert await queue.complete(
        job_id, c2.token, {"chunks": 7}, message="done", peak_rss_bytes=2048
    )
    return [e.row for e in await outbox_entries(queue) if e.row.job_id == job_id]


def make_queue(name: str) -> JobQueue:
    client = Redis.from_url(REDIS_URL)
    return JobQueue(client, name, backoff=Backoff(base_s=0.01, jitter=0))


async def lives(queue_name: str, job_ids: list[str]) -> dict[str, list[StatusUpdate]]:
    queue = make_queue(queue_name)
    try:
        out: dict[str, list[StatusUpdate]] = {}
        for job_id in job_ids:
            out[job_id] = await job_life(queue, job_id)
        return out
    finally:
        await queue.client.aclose()
