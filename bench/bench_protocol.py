"""Benchmark of the Redis job protocol (supervisor/queue/jobqueue.py) on a real Redis.

    .venv/bin/python bench/bench_protocol.py                  # 100,000 jobs, the issue's run
    .venv/bin/python bench/bench_protocol.py --jobs 20000     # a quicker run

Prints, each next to a raw-Redis baseline measured in the same run:
  1. bulk enqueue throughput (enqueue_many in batches) vs pipelined HSET+ZADD with no
     validation, idempotency or events;
  2. Redis memory per waiting job (INFO used_memory delta / jobs, and MEMORY USAGE of the
     queue's keys);
  3. claim+complete throughput with N claimer processes (no children run);
  4. enqueue-to-claim latency p50/p99 with one idle claimer blocked in claim(), in its own
     process, vs a bare LPUSH -> BLPOP hand-off between two processes.
Uses its own queue name and deletes every key it made.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

from redis.asyncio import Redis

from supervisor.config import DEFAULT_REDIS_URL
from supervisor.queue.jobqueue import JobQueue
from supervisor.queue.keys import QueueKeys


def payload(i: int, tag: str) -> dict[str, Any]:
    return {
        "job_id": f"{tag}-{i:07d}",
        "tenant_id": "bench-tenant",
        "data_source": {"type": "url", "url": f"https://example.com/docs/{i}"},
        "metadata": {"source": "bench"},
    }


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def used_memory(client: Redis) -> int:
    info: Any = await client.info("memory")
    return int(info["used_memory"])


async def delete_pattern(client: Redis, pattern: str) -> None:
    keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i : i + 500])


async def wait_blocked(client: Redis, name: str) -> None:
    """Until the client named `name` is blocked in a BLPOP (CLIENT LIST flag `b`)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for entry in await client.client_list():
            if entry.get("name") == name and "b" in entry.get("flags", ""):
                return
        await asyncio.sleep(0.0005)
    raise RuntimeError(f"claimer {name} never blocked")


# ---- claimer processes (spawned) -------------------------------------------------------


def drain_proc(url: str, queue: str, worker: str, slots: int, go: Event, out: Connection) -> None:
    async def main() -> None:
        client = Redis.from_url(url)
        q = JobQueue(client, queue)
        await client.ping()
        out.send("ready")
        go.wait()
        done = 0
        last = time.monotonic()

        async def slot() -> None:
            nonlocal done, last
            while (claim := await q.claim(worker, lease_s=60, timeout_s=1.0)) is not None:
                await q.complete(claim.job.job_id, claim.token)
                done += 1
                last = time.monotonic()

        await asyncio.gather(*(slot() for _ in range(slots)))
        out.send((done, last))
        await client.aclose()

    asyncio.run(main())


def idle_claimer_proc(url: str, queue: str, n: int, name: str, out: Connection) -> None:
    async def main() -> None:
        client = Redis.from_url(url, client_name=name)
        q = JobQueue(client, queue)
        await client.ping()
        out.send("ready")
        for _ in range(n):
            claim = await q.claim(name, lease_s=60, timeout_s=30)
            claimed_at = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
            if claim is None:
                out.send(None)
                break
            out.send(claimed_at)
            await q.complete(claim.job.job_id, claim.token)
        await client.aclose()

    asyncio.run(main())


def blpop_proc(url: str, key: str, n: int, name: str, out: Connection) -> None:
    async def main() -> None:
        client = Redis.from_url(url, client_name=name)
        await client.ping()
        out.send("ready")
        for _ in range(n):
            await client.blpop([key], timeout=4)
            out.send(time.monotonic())
        await client.aclose()

    asyncio.run(main())


# ---- phases ------------------------------------------------------------------------------


async def bench_enqueue(q: JobQueue, client: Redis, n: int, batch: int, tag: str) -> float:
    start = time.perf_counter()
    for lo in range(0, n, batch):
        await q.enqueue_many([payload(i, tag) for i in range(lo, min(n, lo + batch))])
    return n / (time.perf_counter() - start)


async def bench_raw_enqueue(client: Redis, n: int, batch: int, tag: str) -> float:
    import json

    hkey, zkey = f"bench-raw:{{{tag}}}:payloads", f"bench-raw:{{{tag}}}:waiting"
    start = time.perf_counter()
    for lo in range(0, n, batch):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(lo, min(n, lo + batch)):
                p = payload(i, tag)
                pipe.hset(hkey, p["job_id"], json.dumps(p, separators=(",", ":")))
                pipe.zadd(zkey, {p["job_id"]: i})
            await pipe.execute()
    rate = n / (time.perf_counter() - start)
    await client.delete(hkey, zkey)
    return rate


def bench_claimers(url: str, queue: str, n: int, procs: int, slots: int) -> float:
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    pipes, workers = [], []
    for i in range(procs):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=drain_proc, args=(url, queue, f"bench-w{i}", slots, go, child))
        proc.start()
        pipes.append(parent)
        workers.append(proc)
    for conn in pipes:
        assert conn.recv() == "ready"
    start = time.monotonic()
    go.set()
    results: list[tuple[int, float]] = [conn.recv() for conn in pipes]
    done = sum(n for n, _ in results)
    # Until the last completion (CLOCK_MONOTONIC is shared by processes), not the idle
    # timeout after which each claimer gives up on the empty queue.
    elapsed = max(last for _, last in results) - start
    for proc in workers:
        proc.join()
    if done != n:
        raise RuntimeError(f"claimers completed {done} of {n} jobs")
    return n / elapsed


# multiprocessing's spawn pickles Process targets: lambdas cannot cross, so bind arguments.
class _Bound:
    def __init__(self, fn: Callable[..., None], *args: Any) -> None:
        self.fn, self.args = fn, args

    def __call__(self, name: str, conn: Connection) -> None:
        self.fn(*self.args, name, conn)


async def bench_latency(
    client: Redis,
    samples: int,
    start_proc: _Bound,
    hand_off: Callable[[int], Awaitable[None]],
) -> list[float]:
    ctx = mp.get_context("spawn")
    name = f"bench-idle-{uuid.uuid4().hex[:8]}"
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=start_proc, args=(name, child))
    proc.start()
    assert parent.recv() == "ready"
    out: list[float] = []
    for i in range(samples):
        await wait_blocked(client, name)
        sent_at = time.monotonic()
        await hand_off(i)
        claimed_at = parent.recv()
        if claimed_at is None:
            raise RuntimeError("idle claimer timed out")
        out.append((claimed_at - sent_at) * 1000)
    proc.join()
    return out


async def run(args: argparse.Namespace) -> None:
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    queue = tag
    client = Redis.from_url(args.redis_url)
    q = JobQueue(client, queue)
    try:
        print(f"queue {queue}: {args.jobs} jobs, batches of {args.batch}, "
              f"{args.claimers} claimer processes x {args.slots} slot(s)")  # fmt: skip

        raw_rate = await bench_raw_enqueue(client, args.jobs, args.batch, tag)
        mem_before = await used_memory(client)
        rate = await bench_enqueue(q, client, args.jobs, args.batch, tag)
        mem_after = await used_memory(client)
        counts = await q.counts()
        assert counts["waiting"] == args.jobs, counts
        keys = QueueKeys(queue)
        usage = 0
        for key in (keys.jobs, keys.payloads, keys.waiting, keys.events, keys.wake, keys.seq):
            usage += int(await client.memory_usage(key, samples=0) or 0)
        print(f"enqueue (bulk)        {rate:>10,.0f} jobs/s   "
              f"[raw pipelined HSET+ZADD baseline: {raw_rate:,.0f} jobs/s]")  # fmt: skip
        print(f"memory per waiting job {(mem_after - mem_before) / args.jobs:>9,.0f} B "
              f"(INFO used_memory delta)   {usage / args.jobs:,.0f} B (MEMORY USAGE of "
              f"the queue's keys, incl. the capped events stream)")  # fmt: skip

        claim_rate = bench_claimers(args.redis_url, queue, args.jobs, args.claimers, args.slots)
        print(f"claim+complete        {claim_rate:>10,.0f} jobs/s   "
              f"({args.claimers} processes, no children)")  # fmt: skip
        await delete_pattern(client, keys.pattern)

        n = args.latency_samples
        url = args.redis_url

        async def enqueue_one(i: int) -> None:
            await q.enqueue(payload(i, f"{tag}-lat"))

        lat = await bench_latency(client, n, _Bound(idle_claimer_proc, url, queue, n), enqueue_one)
        wake_key = f"bench-raw:{{{tag}}}:wake"

        async def push(_i: int) -> None:
            await client.lpush(wake_key, "1")

        base = await bench_latency(client, n, _Bound(blpop_proc, url, wake_key, n), push)
        await client.delete(wake_key)
        print(f"enqueue-to-claim      p50 {statistics.median(lat):.2f} ms, "
              f"p99 {pct(lat, 99):.2f} ms, max {max(lat):.2f} ms over {n} "
              f"(target p50 <= 2 ms, p99 <= 5 ms)   [bare LPUSH->BLPOP baseline: p50 "
              f"{statistics.median(base):.2f} ms, p99 {pct(base, 99):.2f} ms]")  # fmt: skip
    finally:
        await delete_pattern(client, QueueKeys(queue).pattern)
        await delete_pattern(client, f"bench-raw:{{{tag}}}:*")
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--claimers", type=int, default=2)
    parser.add_argument("--slots", type=int, default=1, help="concurrent claims per process")
    parser.add_argument("--latency-samples", type=int, default=300)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
