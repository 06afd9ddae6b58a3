"""Heartbeats: a worker is live while its heartbeat is fresh, and gone once it expires."""

from __future__ import annotations

from redis.asyncio import Redis

from supervisor.queue.jobqueue import JobQueue
from supervisor.queue.workers import WorkerRegistry

from .conftest import eventually


async def test_heartbeats_show_live_workers_until_they_expire(q: JobQueue, client: Redis) -> None:
    reg = WorkerRegistry(client, q.keys)
    assert await reg.live() == []
    await reg.beat("short", {"host": "h1", "slots": 2}, ttl_s=0.3)
    await reg.beat("long", {"host": "h2", "slots": 4}, ttl_s=30)
    live = {w["worker_id"]: w for w in await reg.live()}
    assert set(live) == {"short", "long"}
    assert live["short"]["host"] == "h1" and live["long"]["slots"] == 4
    assert isinstance(live["long"]["beat_at"], float)
    assert sorted(w["worker_id"] for w in await q.live_workers()) == ["long", "short"]

    async def live_ids() -> list[str]:
        return [w["worker_id"] for w in await reg.live()]

    await eventually(live_ids, lambda ids: ids == ["long"], timeout_s=5)
    assert await client.exists(q.keys.worker("short")) == 0  # its key expired too

    await reg.beat("long", {"host": "h2", "slots": 4, "running": 1}, ttl_s=30)
    assert [w["running"] for w in await reg.live()] == [1]
    await reg.remove("long")
    assert await reg.live() == []
    assert await client.zcard(q.keys.workers) == 1  # only the expired entry, dropped later
