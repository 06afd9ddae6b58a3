"""How the queue's client reaches Redis: what a URL asks for holds on every path."""

from __future__ import annotations

from redis.asyncio.sentinel import SentinelManagedSSLConnection

from supervisor.queue.connection import redis_client


async def test_a_tls_url_reaches_the_master_found_through_sentinel_over_tls() -> None:
    """rediss:// with Sentinels: the master's connections use TLS with the URL's options,
    as a single server's would (else the password would cross the network in clear)."""
    client = redis_client(
        "rediss://:pw@ignored:6380/2?ssl_cert_reqs=required",
        sentinels=["127.0.0.1:26379"],
        sentinel_master="mymaster",
    )
    try:
        pool = client.connection_pool
        assert issubclass(pool.connection_class, SentinelManagedSSLConnection)
        assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
        assert pool.connection_kwargs["db"] == 2
    finally:
        await client.aclose()
