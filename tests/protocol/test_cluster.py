"""The protocol on a real 3-master Redis Cluster started on loopback ports by this test."""

from __future__ import annotations

import asyncio
import functools
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from supervisor.queue.jobqueue import Backoff, JobQueue, Retention
from supervisor.queue.keys import QueueKeys
from supervisor.queue.states import JobState
from supervisor.queue.workers import WorkerRegistry

from .conftest import eventually, job

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="redis-server/redis-cli not installed",
)


def free_cluster_ports(n: int) -> list[int]:
    """Ports free for a node and for its cluster bus (port + 10000)."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30
    ).stdout


def _answers(port: int) -> bool:
    return cli(port, "ping").strip() == "PONG"


def _cluster_ok(port: int) -> bool:
    return "cluster_state:ok" in cli(port, "cluster", "info")


def node_argv(port: int, node_dir: Path) -> list[str]:
    settings = {
        "port": str(port),
        "bind": "127.0.0.1",
        "cluster-enabled": "yes",
        "cluster-config-file": "nodes.conf",
        "cluster-node-timeout": "5000",
        "dir": str(node_dir),
        "save": "",
        "appendonly": "no",
    }
    return ["redis-server", *(x for k, v in settings.items() for x in (f"--{k}", v))]


@pytest.fixture
def cluster_ports(tmp_path: Path) -> Iterator[list[int]]:
    ports = free_cluster_ports(3)
    procs = []
    try:
        for port in ports:
            node_dir = tmp_path / str(port)
            node_dir.mkdir()
            procs.append(
                subprocess.Popen(
                    node_argv(port, node_dir),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:
            _wait(functools.partial(_answers, port))
        nodes = [f"127.0.0.1:{p}" for p in ports]
        create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0"]
        created = subprocess.run(
            [*create, "--cluster-yes"], capture_output=True, text=True, timeout=60
        )
        assert created.returncode == 0, created.stdout + created.stderr
        for port in ports:
            _wait(functools.partial(_cluster_ok, port))
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait(cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("cluster did not come up")
        time.sleep(0.05)


@pytest.fixture
async def cluster(cluster_ports: list[int]) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=cluster_ports[0])
    await client.initialize()
    yield client
    await client.aclose()


def queues_on_different_nodes(client: RedisCluster) -> tuple[str, str]:
    def node_of(name: str) -> str:
        node = client.get_node_from_key(QueueKeys(name).jobs)
        assert node is not None
        return str(node.name)

    first = "cluster-a"
    for i in range(1000):
        other = f"cluster-b{i}"
        if node_of(other) != node_of(first):
            return first, other
    raise AssertionError("no second queue name on another node")


async def _blocked_clients(client: RedisCluster) -> int:
    info: Any = await client.info("clients", target_nodes=RedisCluster.ALL_NODES)
    return sum(int(node["blocked_clients"]) for node in info.values())


async def exercise(q: JobQueue, client: RedisCluster) -> None:
    """Every main verb of the protocol, asserting the results as on a single server."""
    assert await q.claim("w0", lease_s=30, timeout_s=0.2) is None  # blocks, times out empty
    # A claimer blocked on the empty queue is woken by an enqueue.
    waiter = asyncio.create_task(q.claim("w0", lease_s=30, timeout_s=20))
    await eventually(lambda: _blocked_clients(client), lambda n: n > 0)
    await q.enqueue(job("c-0"))
    woke = await asyncio.wait_for(waiter, timeout=20)
    assert woke is not None and woke.job.job_id == "c-0"
    assert await q.complete("c-0", woke.token)

    results = await q.enqueue_many(
        [job("c-1"), job("c-2", priority="high"), job("c-3"), job("c-4"), job("c-5")]
    )
    assert all(r.created for r in results)
    assert not (await q.enqueue(job("c-1"))).created
    await q.enqueue(job("c-delayed"), delay_s=60)
    assert (await q.counts())["waiting"] == 5

    first = await q.claim("w1", lease_s=30, timeout_s=5)
    assert first is not None and first.job.job_id == "c-2"
    assert (await q.renew("c-2", first.token, 30)).held
    assert await q.progress("c-2", first.token, 50, "half")
    assert await q.complete("c-2", first.token, {"ok": True})
    rec = await q.get("c-2", with_payload=True)
    assert rec is not None and rec.state is JobState.COMPLETED and rec.result == {"ok": True}
    assert rec.payload is not None and rec.payload["job_id"] == "c-2"

    second = await q.claim("w1", lease_s=30, timeout_s=5)
    assert second is not None and second.job.job_id == "c-1"
    assert (await q.fail("c-1", second.token, "boom", retryable=True, attempt=1)).outcome == "retry"
    third = await q.claim("w1", lease_s=30, timeout_s=5)
    assert third is not None and third.job.job_id == "c-3"
    assert await q.release("c-3", third.token)
    again = await q.claim("w1", lease_s=30, timeout_s=5)
    assert again is not None and again.job.job_id == "c-3"

    heard: asyncio.Queue[str] = asyncio.Queue()

    async def listen() -> None:
        async for job_id in q.cancel_requests():
            await heard.put(job_id)

    listener = asyncio.create_task(listen())
    try:
        # Announcements are not replayed, so keep cancelling until the listener hears one.
        async def cancel_heard() -> bool:
            assert await q.cancel("c-3") == "requested"
            try:
                return await asyncio.wait_for(heard.get(), timeout=0.2) == "c-3"
            except TimeoutError:
                return False

        await eventually(cancel_heard, timeout_s=10)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
    assert (await q.renew("c-3", again.token, 30)).cancel_requested
    assert await q.ack_cancel("c-3", again.token)
    assert await q.cancel("c-delayed") == "cancelled"
    assert await q.retry("c-delayed") == "requeued"

    stalled = await q.claim("w2", lease_s=0.05, timeout_s=5)
    assert stalled is not None
    await eventually(q.reap, lambda r: stalled.job.job_id in r.recovered)

    assert await q.counts() == {
        "waiting": 3, "delayed": 1, "active": 0, "completed": 2, "failed": 0, "cancelled": 1,
    }  # fmt: skip
    age = await q.oldest_waiting_age_s()
    assert age is not None and age >= 0
    assert len((await q.list_jobs("waiting"))[0]) == 3
    events = await q.read_events("0", block_ms=100, count=1000)
    assert {"enqueued", "started", "completed", "retried", "stalled", "cancelled"} <= {
        f["type"] for _, f in events
    }
    reg = WorkerRegistry(client, q.keys)
    await reg.beat("w1", {"host": "h"}, ttl_s=30)
    assert [w["worker_id"] for w in await q.live_workers()] == ["w1"]
    assert await q.purge("waiting") == 3


async def test_protocol_runs_unchanged_on_a_three_master_cluster(cluster: RedisCluster) -> None:
    assert len(cluster.get_primaries()) == 3
    name_a, name_b = queues_on_different_nodes(cluster)
    assert key_slot(QueueKeys(name_a).jobs.encode()) != key_slot(QueueKeys(name_b).jobs.encode())
    for name in (name_a, name_b):
        q = JobQueue(
            cluster,
            name,
            backoff=Backoff(base_s=60),
            retention=Retention(keep_completed_s=60),
        )
        await exercise(q, cluster)
        # Every key of the queue lives in one slot.
        slots = {key_slot(k.encode()) for k in [*q.keys.all_state_sets().values(), q.keys.jobs]}
        assert len(slots) == 1


async def test_the_status_reconciler_runs_on_a_cluster(
    cluster: RedisCluster, tmp_path: Path
) -> None:
    """The projector, the sweep and its look for jobs Redis lost, on a queue served by a
    cluster (scripts, pipelines, XINFO and TIME go to the node of the queue's slot)."""
    from supervisor.status import build_status_backend
    from supervisor.status.projector import StatusProjector
    from supervisor.status.reconcile import sweep_page

    _, name = queues_on_different_nodes(cluster)
    q = JobQueue(cluster, name)
    backend = build_status_backend("sqlite", sqlite_path=str(tmp_path / "s.sqlite3"))
    try:
        await q.enqueue(job("kept"))
        await q.enqueue(job("lost"))
        assert await StatusProjector(cluster, q.keys, backend, consumer="p").drain(10.0)
        await cluster.hdel(q.keys.jobs, "lost")
        await cluster.zrem(q.keys.waiting, "lost")
        report = await sweep_page(q, backend, limit=100, lost_after_s=0.0)
        assert report.lost == ["lost"] and report.missing == [], report
        kept, lost = await backend.fetch("kept"), await backend.fetch("lost")
        assert kept is not None and kept["status"] == "queued"
        assert lost is not None and lost["status"] == "failed"
    finally:
        await backend.aclose()
        keys = [k async for k in cluster.scan_iter(match=q.keys.pattern)]
        for key in keys:
            await cluster.delete(key)
