"""A write that a read-only Redis (a replica, an old master after a failover) refuses is a
ReadOnlyError on every server version the product runs on, which the daemon retries as
transient: Redis before 7 runs a writing script there and fails its first write with a
script error quoting READONLY."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError, ReadOnlyError

from supervisor.queue.jobqueue import JobQueue
from supervisor.redis_retry import TRANSIENT
from tests.redis_server import SERVERS, PrivateRedis, free_port

from .conftest import job


@pytest.mark.parametrize("binary", SERVERS)
async def test_a_write_refused_by_a_replica_is_a_read_only_error(
    tmp_path: Path, binary: str
) -> None:
    server = PrivateRedis(tmp_path, persistent=False, binary=binary)
    server.start()
    client = Redis.from_url(server.url)
    try:
        q = JobQueue(client, "read-only")
        await q.enqueue(job("before"))
        await client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        with pytest.raises(ReadOnlyError) as refused:
            await q.enqueue(job("after"))
        assert isinstance(refused.value, TRANSIENT)
        assert (await q.get("before")) is not None and (await q.get("after")) is None
        # Past its maxmemory (noeviction) a Redis refuses writes as out of memory.
        await client.execute_command("REPLICAOF", "NO", "ONE")
        await client.config_set("maxmemory", "1")
        with pytest.raises(OutOfMemoryError):
            await q.enqueue(job("full"))
    finally:
        await client.aclose()
        server.close()
