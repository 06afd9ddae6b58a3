"""The daemon against a real Redis Cluster and a real Sentinel-managed master."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from supervisor.config import load_shared_config
from supervisor.queue.client import enqueue_ingestion_job
from supervisor.queue.jobqueue import JobQueue
from tests.api.conftest import api_server, eventually
from tests.daemon.conftest import job, wait_until
from tests.protocol import test_cluster
from tests.redis_server import PrivateRedis, free_port

# The real 3-master cluster the protocol tests start, reused as a fixture here; so is the
# API tests' server factory.
cluster_ports = test_cluster.cluster_ports
__all__ = ["api_server"]
INGESTCTL = str(Path(sys.executable).parent / "ingestctl")


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


def _entry_points_share_the_queue(api_server, queue_name: str, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """The Python client, ingestctl and the API each enqueue one job through the topology
    `env` describes, and each reads back the others' jobs."""
    config = load_shared_config({**env, "INGEST_QUEUE": queue_name})
    created = enqueue_ingestion_job(
        "by-client", "tn_a", {"type": "text", "text": "hi"}, config=config
    )
    assert created.created

    ctl_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REDIS_"))},
        **env,
        "INGEST_QUEUE": queue_name,
    }

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [INGESTCTL, *args], capture_output=True, text=True, timeout=30, env=ctl_env
        )

    r = ctl("enqueue", "--job-id", "by-ctl", "--tenant", "tn_a", "--text", "hi")
    assert r.returncode == 0, r.stderr
    r = ctl("status", "by-client", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["job_id"] == "by-client"

    server = api_server(**env, INGEST_QUEUE=queue_name, INGEST_STATUS_BACKEND="none")
    with server.client() as http:
        body = {
            "job_id": "by-api",
            "tenant_id": "tn_a",
            "data_source": {"type": "text", "text": "x"},
        }
        assert http.post("/jobs", json=body).status_code == 202
        for job_id in ("by-client", "by-ctl", "by-api"):
            got = http.get(f"/jobs/{job_id}")
            assert got.status_code == 200, (job_id, got.text)
            assert got.json()["state"] == "waiting"
        # A probe that missed its budget on a busy machine answers 503: asked
        # again, as a load balancer would.
        eventually(lambda: http.get("/health/ready"), lambda r: r.status_code == 200)
        health = http.get("/health/queue").json()  # no daemon runs: unhealthy for that alone
        assert (health["redis"], health["queue"], health["worker"]) == (True, True, False)
        assert health["details"]["queue_counts"]["waiting"] == 3

    async def waiting() -> int:
        client = config.redis()
        try:
            return (await JobQueue(client, queue_name).counts())["waiting"]
        finally:
            await client.aclose()

    assert asyncio.run(waiting()) == 3


def test_api_ctl_and_client_on_a_three_master_cluster(
    api_server, queue_name: str, cluster_ports: list[int]
) -> None:
    env = {"REDIS_URL": f"redis://127.0.0.1:{cluster_ports[0]}/0", "INGEST_REDIS_CLUSTER": "1"}
    _entry_points_share_the_queue(api_server, queue_name, env)


def test_api_ctl_and_client_find_the_master_through_sentinel(
    api_server, queue_name: str, sentinel: tuple[PrivateRedis, int]
) -> None:
    _master, sentinel_port = sentinel
    env = {
        "REDIS_URL": "redis://ignored-host:1/0",
        "INGEST_REDIS_SENTINELS": f"127.0.0.1:{sentinel_port}",
        "INGEST_REDIS_SENTINEL_MASTER": "ingestmaster",
    }
    _entry_points_share_the_queue(api_server, queue_name, env)
