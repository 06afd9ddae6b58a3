"""A Redis client for a queue: a single server, a Redis Cluster, or a master found via Sentinel."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ReadOnlyError

AnyRedis = Redis | RedisCluster

# Blocking claims wait at most a few seconds, so a 10 s socket timeout fires only on a hung
# server; the daemon's own deadlines (lease trust, settle) bound every call anyway.
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0


def redis_client(
    url: str,
    *,
    cluster: bool = False,
    sentinels: Sequence[str] = (),
    sentinel_master: str | None = None,
    socket_timeout: float = SOCKET_TIMEOUT_S,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    retry: Retry | None = None,
    max_connections: int | None = None,
) -> Redis | RedisCluster:
    """`max_connections` bounds the pool (per node on a cluster); `retry` replaces the
    client's default retry policy."""
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
    }
    if retry is not None:
        options["retry"] = retry
    if max_connections is not None:
        options["max_connections"] = max_connections
    if cluster:
        return RedisCluster.from_url(url, **options)
    if sentinels:
        if not sentinel_master:
            raise ValueError("a Sentinel setup needs the master's name")
        hosts = []
        for item in sentinels:
            host, _, port = item.rpartition(":")
            hosts.append((host or item, int(port) if port.isdigit() else 26379))
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
        )
        # Connection details other than the host (password, db, TLS) come from the URL: a
        # rediss:// URL reaches the master over TLS, with the URL's ssl_* options.
        base = Redis.from_url(url)
        kwargs = base.connection_pool.connection_kwargs
        tls = issubclass(base.connection_pool.connection_class, SSLConnection)
        master: Redis = sentinel.master_for(
            sentinel_master,
            password=kwargs.get("password"),
            username=kwargs.get("username"),
            db=kwargs.get("db", 0),
            ssl=tls,
            **{k: v for k, v in kwargs.items() if k.startswith("ssl_")},
            **options,
        )
        return master
    # READONLY: an old master, a replica now, still at this address's pooled connections
    # after a failover moved the address on. The connection is dropped and the command
    # sent once more on a new one, which reaches the new master; nothing else is retried
    # here (the callers' deadlines do that). A Sentinel client does so by itself.
    options.setdefault("retry", Retry(NoBackoff(), 1, supported_errors=(ReadOnlyError,)))
    return Redis.from_url(url, health_check_interval=15, retry_on_error=[ReadOnlyError], **options)
