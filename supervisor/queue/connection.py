"""The daemon's Redis client: a single server, a Redis Cluster, or a master found via Sentinel."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

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
) -> Redis | RedisCluster:
    if cluster:
        return RedisCluster.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S
        )
    if sentinels:
        if not sentinel_master:
            raise ValueError("a Sentinel setup needs the master's name")
        hosts = []
        for item in sentinels:
            host, _, port = item.rpartition(":")
            hosts.append((host or item, int(port) if port.isdigit() else 26379))
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
        )
        # Connection details other than the host (password, db) come from the URL.
        base = Redis.from_url(url)
        kwargs = base.connection_pool.connection_kwargs
        master: Redis = sentinel.master_for(
            sentinel_master,
            password=kwargs.get("password"),
            username=kwargs.get("username"),
            db=kwargs.get("db", 0),
            socket_timeout=SOCKET_TIMEOUT_S,
        )
        return master
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=15,
    )
