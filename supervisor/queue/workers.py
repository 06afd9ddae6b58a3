"""Heartbeats: each daemon keeps a short-lived key describing itself, indexed in a ZSET."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from supervisor.queue.keys import QueueKeys


class WorkerRegistry:
    def __init__(self, client: Redis | RedisCluster, keys: QueueKeys) -> None:
        self.client = client
        self.keys = keys

    async def beat(self, worker_id: str, info: dict[str, Any], ttl_s: float) -> None:
        expires_ms = int((time.time() + ttl_s) * 1000)
        body = json.dumps({**info, "worker_id": worker_id, "beat_at": time.time()})
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.worker(worker_id), body, px=int(ttl_s * 1000))
            pipe.zadd(self.keys.workers, {worker_id: expires_ms})
            # Forget workers whose heartbeat expired long ago, so the index stays bounded.
            pipe.zremrangebyscore(self.keys.workers, "-inf", expires_ms - 3_600_000)
            await pipe.execute()

    async def remove(self, worker_id: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            await pipe.execute()

    async def live(self) -> list[dict[str, Any]]:
        now_ms = int(time.time() * 1000)
        ids = await self.client.zrangebyscore(self.keys.workers, now_ms, "+inf")
        if not ids:
            return []
        names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(self.keys.worker(name))
            bodies = await pipe.execute()
        return [json.loads(b) for b in bodies if b is not None]
