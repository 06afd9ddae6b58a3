"""Heartbeats: each daemon keeps a short-lived key describing itself, indexed in a ZSET.

Expiry, beat time and the index's trim are all on the Redis server's clock (TIME, in the
scripts `heartbeat.lua` and `live_workers.lua`), like every other time in the protocol: a
daemon whose own clock is off is still live for every reader, and cannot evict the others.
The stored format is the one older versions wrote and read (JSON with `beat_at` in seconds;
the index scored by expiry in ms), so a rolling upgrade mixes them safely.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from supervisor.queue.keys import QueueKeys
from supervisor.queue.scripts import run_script, script_source

# A supervisor whose spawns paused this many times in a row (0.5 + 1 + 2 s of children
# failing at start) runs nothing: its slots are not capacity.
SPAWN_PAUSES_UNSERVING = 3


def serving(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The live supervisors (heartbeats, as `live_workers` gives them) that can start jobs:
    not stopping, and whose children do not keep failing to start."""
    return [
        w
        for w in workers
        if not w.get("stopping") and _whole(w.get("spawn_pauses")) < SPAWN_PAUSES_UNSERVING
    ]


def _whole(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class WorkerRegistry:
    def __init__(self, client: Redis | RedisCluster, keys: QueueKeys) -> None:
        self.client = client
        self.keys = keys
        self._beat: AsyncScript = client.register_script(script_source("heartbeat"))
        self._live: AsyncScript = client.register_script(script_source("live_workers"))

    async def beat(self, worker_id: str, info: dict[str, Any], ttl_s: float) -> None:
        """Store `info` as the worker's heartbeat for `ttl_s`, in one atomic round trip; the
        script adds `beat_at` from the server's clock (any in `info` is dropped)."""
        fields = {k: v for k, v in info.items() if k != "beat_at"}
        # Never empty (worker_id is in it): the script appends `beat_at` to the object text.
        body = json.dumps({**fields, "worker_id": worker_id})
        ttl_ms = max(1, int(ttl_s * 1000))  # SET PX refuses 0
        await run_script(
            self._beat, [self.keys.workers, self.keys.worker(worker_id)], [worker_id, ttl_ms, body]
        )

    async def remove(self, worker_id: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.worker(worker_id))
            pipe.zrem(self.keys.workers, worker_id)
            await pipe.execute()

    async def live(self) -> list[dict[str, Any]]:
        """The heartbeats not yet expired by the server's clock (not this host's)."""
        ids = await run_script(self._live, [self.keys.workers])
        if not ids:
            return []
        names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(self.keys.worker(name))
            bodies = await pipe.execute()
        return [json.loads(b) for b in bodies if b is not None]
