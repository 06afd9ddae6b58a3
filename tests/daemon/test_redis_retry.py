"""The daemon's retries of Redis calls, through a real server that holds its writes."""

from __future__ import annotations

import time
import warnings

from redis.asyncio import Redis

from supervisor.redis_retry import call_until
from tests.redis_server import PrivateRedis


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
