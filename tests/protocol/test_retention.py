"""Retention of finished jobs, bounded indexes, the capped events stream, counts, queue age."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.asyncio import Redis

from supervisor.queue.jobqueue import Claim, JobQueue, Retention
from supervisor.queue.states import JobState

from .conftest import QueueFactory, events_of, eventually, job


async def claim_one(q: JobQueue, lease_s: float = 30) -> Claim:
    got = await q.claim("w", lease_s=lease_s, timeout_s=5)
    assert got is not None
    return got


async def stream_cap(client: Redis, maxlen: int) -> int:
    """XADD MAXLEN ~ trims whole macro nodes, so a stream may exceed maxlen by one node."""
    node: Any = await client.config_get("stream-node-max-entries")
    return maxlen + int(node["stream-node-max-entries"])


async def ids_anywhere(client: Redis, q: JobQueue, ids: set[str]) -> set[str]:
    """Which of `ids` still appear in any hash or state set of the queue."""
    members: list[Any] = []
    for key in (q.keys.jobs, q.keys.payloads):
        members += await client.hkeys(key)
    for key in q.keys.all_state_sets().values():
        members += await client.zrange(key, 0, -1)
    return {m.decode() for m in members} & ids


async def test_finished_jobs_and_payloads_expire_after_their_keep_time(
    make_queue: QueueFactory, client: Redis
) -> None:
    q = make_queue(retention=Retention(keep_completed_s=1.0, keep_failed_s=1.0))
    done, dead, gone = [f"ok-{i}" for i in range(5)], ["bad-0", "bad-1"], ["cx-0", "cx-1"]
    await q.enqueue_many([job(i) for i in done + dead])
    await q.enqueue_many([job(i) for i in gone])
    for _ in done:
        c = await claim_one(q)
        assert await q.complete(c.job.job_id, c.token, {"big": "x" * 1000})
    for _ in dead:
        c = await claim_one(q)
        await q.fail(c.job.job_id, c.token, "nope", retryable=False, attempt=1)
    for i in gone:
        assert await q.cancel(i) == "cancelled"
    everything = set(done + dead + gone)

    early = await q.reap()
    assert early.trimmed == 0  # younger than their keep time
    assert await ids_anywhere(client, q, everything) == everything

    async def reap_then_look() -> set[str]:
        await q.reap()
        return await ids_anywhere(client, q, everything)

    await eventually(reap_then_look, lambda left: not left, timeout_s=10)
    assert [await q.get(i) for i in sorted(everything)] == [None] * len(everything)
    counts = await q.counts()
    assert sum(counts.values()) == 0


async def test_indexes_stay_bounded_under_a_stream_of_jobs(
    make_queue: QueueFactory, client: Redis
) -> None:
    maxlen = 20
    q = make_queue(
        retention=Retention(keep_completed_s=0, keep_failed_s=0, events_maxlen=maxlen),
        default_max_attempts=1,
    )
    for batch in range(6):
        ids = [f"s{batch}-{i}" for i in range(50)]
        await q.enqueue_many([job(i) for i in ids])
        for n, _ in enumerate(ids):
            c = await claim_one(q)
            await q.progress(c.job.job_id, c.token, 50, "half")
            if n % 5:
                assert await q.complete(c.job.job_id, c.token)
            else:
                await q.fail(c.job.job_id, c.token, "x", retryable=False, attempt=1)
        await q.reap()
        assert await client.hlen(q.keys.jobs) <= 1
        assert await client.hlen(q.keys.payloads) <= 1
        assert await client.xlen(q.keys.events) <= await stream_cap(client, maxlen)
        assert await client.llen(q.keys.wake) <= 10_000
    # Wake-ups nobody consumed are dropped by the first claim that finds the queue empty.
    assert await q.try_claim("w", 30) is None
    assert await client.llen(q.keys.wake) == 0
    assert sum((await q.counts()).values()) <= 1
    assert await client.hlen(q.keys.stats) <= 5


async def test_events_stream_records_the_lifecycle(q: JobQueue, client: Redis) -> None:
    await q.enqueue(job("ev-ok"))
    c = await claim_one(q)
    assert await q.progress("ev-ok", c.token, 40, "reading")
    assert await q.complete("ev-ok", c.token)

    await q.enqueue(job("ev-bad", max_attempts=2))
    c = await claim_one(q)
    await q.fail("ev-bad", c.token, "once", retryable=True, attempt=1)
    retried = await q.claim("w", lease_s=30, timeout_s=10)  # after the backoff
    assert retried is not None
    await q.fail("ev-bad", retried.token, "twice", retryable=True, attempt=2)

    await q.enqueue(job("ev-stall"))
    await claim_one(q, lease_s=0.05)
    await eventually(q.reap, lambda r: "ev-stall" in r.recovered)
    assert await q.cancel("ev-stall") == "cancelled"

    events = await events_of(client, q.keys.events)
    by_job: dict[str, list[str]] = {}
    for e in events:
        by_job.setdefault(e["job"], []).append(e["type"])
    assert by_job == {
        "ev-ok": ["enqueued", "started", "progress", "completed"],
        "ev-bad": ["enqueued", "started", "retried", "started", "failed"],
        "ev-stall": ["enqueued", "started", "stalled", "cancelled"],
    }
    for job_id in by_job:
        revs = [int(e["rev"]) for e in events if e["job"] == job_id]
        assert revs == sorted(revs) and len(set(revs)) == len(revs)
    failed = next(e for e in events if e["type"] == "failed")
    assert failed["error"] == "twice" and failed["attempt"] == "2" and failed["state"] == "failed"
    progress = next(e for e in events if e["type"] == "progress")
    assert float(progress["progress"]) == 40 and progress["message"] == "reading"


async def test_read_events_follows_the_stream(q: JobQueue) -> None:
    await q.enqueue(job("re-1"))
    first = await q.read_events("0", block_ms=100)
    assert [f["type"] for _, f in first] == ["enqueued"]
    last_id = first[-1][0]
    assert await q.read_events(last_id, block_ms=50) == []
    await q.enqueue(job("re-2"))
    nxt = await q.read_events(last_id, block_ms=100)
    assert [(f["type"], f["job"]) for _, f in nxt] == [("enqueued", "re-2")]


async def test_counts_report_every_state(q: JobQueue) -> None:
    assert await q.counts() == dict.fromkeys(
        ("waiting", "delayed", "active", "completed", "failed", "cancelled"), 0
    )
    await q.enqueue_many([job(f"c{i}", max_attempts=1) for i in range(6)])
    await q.enqueue(job("later"), delay_s=60)
    a, b, c = await claim_one(q), await claim_one(q), await claim_one(q)
    assert await q.complete(a.job.job_id, a.token)
    await q.fail(b.job.job_id, b.token, "x", retryable=True, attempt=1)
    assert await q.cancel("c5") == "cancelled"
    assert c.job.state is JobState.ACTIVE
    assert await q.counts() == {
        "waiting": 2, "delayed": 1, "active": 1, "completed": 1, "failed": 1, "cancelled": 1,
    }  # fmt: skip
    page, cursor = await q.list_jobs("waiting", limit=1)
    assert [r.job_id for r in page] == ["c3"] and cursor == 1
    page, cursor = await q.list_jobs("waiting", limit=1, cursor=1)
    assert [r.job_id for r in page] == ["c4"]
    assert [r.job_id for r in (await q.list_jobs("active"))[0]] == [c.job.job_id]


async def test_oldest_waiting_age_tracks_the_longest_waiting_job(q: JobQueue) -> None:
    assert await q.oldest_waiting_age_s() is None
    await q.enqueue(job("later"), delay_s=60)
    assert await q.oldest_waiting_age_s() is None  # delayed jobs are not waiting
    started = time.monotonic()
    await q.enqueue(job("old-normal"))
    await eventually(q.oldest_waiting_age_s, lambda age: age is not None and age >= 0.2)
    # A newer high-priority job sits at the front but is not the oldest.
    await q.enqueue(job("new-high", priority="high"))
    age = await q.oldest_waiting_age_s()
    assert age is not None and 0.2 <= age <= time.monotonic() - started + 0.1
    for _ in range(2):
        c = await claim_one(q)
        assert await q.complete(c.job.job_id, c.token)
    assert await q.oldest_waiting_age_s() is None


async def test_the_tenants_of_completed_jobs_are_remembered_once_each_newest_first(
    make_queue: QueueFactory, client: Redis
) -> None:
    """What a daemon reads when it starts, to know whose jobs run (the start-failure gate):
    one entry per tenant however many jobs it completed, the newest 100 tenants kept, and
    not tied to the completed jobs' own retention."""
    q = make_queue(retention=Retention(keep_completed_s=0.001))
    for i, tenant in enumerate(["a", "b", "c", *(["noisy"] * 30)]):
        await q.enqueue(job(f"{tenant}-{i}", tenant_id=tenant))
        claim = await claim_one(q)
        assert await q.complete(claim.job.job_id, claim.token)
    assert await q.recent_tenants(3, within_s=60) == ["noisy", "c", "b"]
    assert await q.recent_tenants(10, within_s=60) == ["noisy", "c", "b", "a"]
    assert await q.recent_tenants(0, within_s=60) == []
    # Only completions within the window count.
    await client.zadd(q.keys.completed_tenants, {"a": 1000})
    assert await q.recent_tenants(10, within_s=60) == ["noisy", "c", "b"]
    # The tenants' own jobs expired long ago (the last few completions, within the same
    # millisecond or two as the check, may not have yet).
    assert [await q.get(j) for j in ("a-0", "b-1", "c-2")] == [None, None, None]
    for i in range(120):
        await q.enqueue(job(f"many-{i}", tenant_id=f"t{i}"))
        claim = await claim_one(q)
        assert await q.complete(claim.job.job_id, claim.token)
    assert await client.zcard(q.keys.completed_tenants) == 100
    assert await q.recent_tenants(1, within_s=60) == ["t119"]


async def test_a_broken_completed_tenants_key_never_fails_a_completion(
    q: JobQueue, client: Redis
) -> None:
    await client.set(q.keys.completed_tenants, "not a sorted set")
    await q.enqueue(job("c-1"))
    claim = await claim_one(q)
    assert await q.complete(claim.job.job_id, claim.token)
    rec = await q.get("c-1")
    assert rec is not None and rec.state is JobState.COMPLETED


async def test_a_listing_reads_a_bounded_number_of_bytes(q: JobQueue) -> None:
    """Records hold children's results (MiBs each): a page of `ingestctl list` stops at
    PAGE_BYTES of them (at least one record) and says where the next page starts."""
    import json as _json

    from supervisor.queue.reads import PAGE_BYTES

    await q.enqueue_many([job(f"big{i}") for i in range(3)])
    for i in range(3):
        raw = await q.client.hget(q.keys.jobs, f"big{i}")
        rec = _json.loads(raw)
        rec["result"] = _json.dumps("x" * (PAGE_BYTES * 2 // 3))
        await q.client.hset(q.keys.jobs, f"big{i}", _json.dumps(rec))
    page, cursor = await q.list_jobs("waiting", limit=1000)
    assert [r.job_id for r in page] == ["big0"] and cursor == 1
    page, cursor = await q.list_jobs("waiting", limit=1000, cursor=2)
    assert [r.job_id for r in page] == ["big2"] and cursor is None


@pytest.mark.parametrize("char", ["\ufffd", "é", "日"])
async def test_a_result_is_stored_at_most_a_few_times_its_length(
    client: Redis, q: JobQueue, char: str
) -> None:
    """A child's RESULT line is capped in bytes; what Redis keeps of it must stay within a
    small multiple of that (not one `\\uXXXX` escape, escaped again, per character: a
    result of undecodable bytes, each read as U+FFFD, would take 7 bytes per byte)."""
    await q.enqueue(job("big"))
    claim = await q.try_claim("w", 60)
    assert isinstance(claim, Claim)
    text = char * 100_000
    assert await q.complete("big", claim.token, {"text": text})
    stored = await client.hstrlen(q.keys.jobs, "big")
    assert stored < len(text.encode()) * 1.2 + 4096, stored
    assert (await q.get("big")).result == {"text": text}
