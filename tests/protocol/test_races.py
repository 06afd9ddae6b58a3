"""Several real claimer processes on one queue: every job is claimed and completed once."""

from __future__ import annotations

import asyncio
from collections import Counter

from redis.asyncio import Redis

from supervisor.queue.jobqueue import JobQueue

from .conftest import events_of, job, start_claimer

N_JOBS = 500
N_PROCS = 4


async def test_concurrent_claimer_processes_take_each_job_exactly_once(
    q: JobQueue, client: Redis, redis_url: str, queue_name: str
) -> None:
    procs = [await start_claimer("drain", redis_url, queue_name, f"w{i}") for i in range(N_PROCS)]
    # All claimers are blocked on the empty queue when the whole batch lands at once.
    await q.enqueue_many([job(f"race-{i:04d}") for i in range(N_JOBS)])
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    assert [p.returncode for p in procs] == [0] * N_PROCS

    done = [line.split() for out, _ in outputs for line in out.decode().splitlines()]
    claimed = Counter(parts[1] for parts in done)
    assert set(claimed) == {f"race-{i:04d}" for i in range(N_JOBS)}
    assert max(claimed.values()) == 1
    assert all(parts[2] == "1" for parts in done), "a complete() was refused"
    per_proc = [len(out.decode().splitlines()) for out, _ in outputs]
    assert sum(per_proc) == N_JOBS

    counts = await q.counts()
    assert counts["completed"] == N_JOBS and counts["waiting"] == counts["active"] == 0
    events = await events_of(client, q.keys.events)
    started = Counter(e["job"] for e in events if e["type"] == "started")
    assert len(started) == N_JOBS and max(started.values()) == 1
    for rec in (await q.list_jobs("completed", limit=1000))[0]:
        assert rec.attempt == 1 and rec.result == {"by": rec.worker_id}
