"""The daemon against a real Redis Cluster and a real Sentinel-managed master."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from supervisor.queue.jobqueue import JobQueue
from tests.daemon.conftest import job, wait_until
from tests.protocol import test_cluster
from tests.redis_server import PrivateRedis, free_port

# The real 3-master cluster the protocol tests start, reused as a fixture here.
cluster_ports = test_cluster.cluster_ports


def _counts(client_factory, queue: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    async def go() -> dict[str, int]:
        client = client_factory()
        try:
            return await JobQueue(client, queue).counts()
        finally:
            await client.aclose()

    return asyncio.run(go())


def _enqueue(client_factory, queue: str, n: int) -> None:  # type: ignore[no-untyped-def]
    async def go() -> None:
        client = client_factory()
        try:
            await JobQueue(client, queue).enqueue_many([job(f"{queue}-{i}") for i in range(n)])
        finally:
            await client.aclose()

    asyncio.run(go())


def test_daemon_on_a_three_master_cluster(
    start_daemon, queue_name: str, cluster_ports: list[int]
) -> None:
    url = f"redis://127.0.0.1:{cluster_ports[0]}/0"

    def factory() -> RedisCluster:
        return RedisCluster.from_url(url)

    d = start_daemon(redis_url=url, INGEST_REDIS_CLUSTER="1")
    _enqueue(factory, queue_name, 10)
    wait_until(lambda: _counts(factory, queue_name)["completed"] == 10, 60, "10 completed")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[tuple[PrivateRedis, int]]:
    master = PrivateRedis(tmp_path / "master", persistent=False)
    master.start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor ingestmaster 127.0.0.1 {master.port} 1\n"
    )
    proc = subprocess.Popen(
        ["redis-server", str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def knows_master() -> bool:
        out = subprocess.run(
            ["redis-cli", "-p", str(port), "sentinel", "get-master-addr-by-name", "ingestmaster"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return str(master.port) in out

    try:
        wait_until(knows_master, 20, "sentinel knows the master")
        yield master, port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        master.close()


def test_daemon_finds_its_master_through_sentinel(
    start_daemon, queue_name: str, sentinel: tuple[PrivateRedis, int]
) -> None:
    master, sentinel_port = sentinel
    d = start_daemon(
        redis_url="redis://ignored-host:1/0",
        INGEST_REDIS_SENTINELS=f"127.0.0.1:{sentinel_port}",
        INGEST_REDIS_SENTINEL_MASTER="ingestmaster",
    )

    def factory() -> Redis:
        return Redis.from_url(master.url)

    _enqueue(factory, queue_name, 5)
    wait_until(lambda: _counts(factory, queue_name)["completed"] == 5, 60, "5 completed")
    d.signal(signal.SIGTERM)
    assert d.wait_exit() == 0
