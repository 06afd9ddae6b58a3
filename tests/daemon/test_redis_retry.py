"""The daemon's retries of Redis calls, through a real server that holds its writes."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import redis
from redis.asyncio import Redis

from supervisor.queue.connection import redis_client
from supervisor.redis_retry import call_until
from tests.redis_server import PrivateRedis
from tests.status.tcp_proxy import TcpProxy


async def test_a_call_retried_until_redis_takes_writes_again(private_redis: PrivateRedis) -> None:
    """Writes held for 1.5 s (CLIENT PAUSE), each attempt bounded to 0.3 s: the call is
    retried until the pause ends and then returns, with no deprecated use of the retry
    library (a path that runs only when Redis fails must not break on its next release)."""
    client = Redis.from_url(private_redis.url)
    await client.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        written = await call_until(
            time.monotonic() + 20,
            lambda: client.set("retried", "yes"),
            what="a held write",
            attempt_timeout_s=0.3,
        )
    assert written
    assert time.monotonic() - started >= 1.0  # it did wait for the pause
    assert await client.get("retried") == b"yes"
    assert [str(w.message) for w in seen if w.category is DeprecationWarning] == []
    await client.aclose()


async def test_a_write_an_old_master_refuses_is_retried_on_a_new_connection(
    tmp_path: Path,
) -> None:
    """A failover that leaves the old master up as a replica, while the daemon's address
    (DNS, a virtual IP, a proxy) now leads to the new one: READONLY must drop the pooled
    connection, so that the retry reaches the new master instead of asking the old one
    again until the deadline."""
    old = PrivateRedis(tmp_path / "old", persistent=False)
    new = PrivateRedis(tmp_path / "new", persistent=False)
    old.start()
    new.start()
    proxy = TcpProxy("127.0.0.1", old.port)
    proxy.start()
    client = redis_client(f"redis://127.0.0.1:{proxy.port}/0")
    try:
        assert await client.set("k", "on the old master")  # a pooled connection to it
        redis.Redis(port=old.port).execute_command("REPLICAOF", "127.0.0.1", "1")
        proxy.target = ("127.0.0.1", new.port)  # the address leads to the new master now
        written = await call_until(
            time.monotonic() + 5, lambda: client.set("k", "on the new master"), what="a write"
        )
        assert written
        assert redis.Redis(port=new.port).get("k") == b"on the new master"
    finally:
        await client.aclose()
        proxy.cut()
        old.close()
        new.close()
