"""Delayed jobs, the retry backoff schedule, and claim() waking without polling."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from api.views import job_view
from supervisor.ctl_format import job_doc
from supervisor.queue.jobqueue import MAX_DELAY_S, Backoff, Claim, JobQueue
from supervisor.queue.payload import PayloadError
from supervisor.queue.redaction import SecretKeys
from supervisor.queue.states import JobState

from .conftest import CountingConnection, QueueFactory, eventually, job, server_ms


@pytest.fixture
async def claimer_client(redis_url: str) -> AsyncIterator[Redis]:
    """A client whose round trips are counted and whose blocked state CLIENT LIST shows."""
    c = Redis.from_url(
        redis_url,
        connection_class=CountingConnection,
        client_name=f"claimer-{uuid.uuid4().hex[:8]}",
    )
    yield c
    await c.aclose()


async def wait_until_blocked(observer: Redis, claimer: Redis) -> None:
    name = claimer.connection_pool.connection_kwargs["client_name"]

    async def blocked() -> bool:
        for entry in await observer.client_list():
            if entry.get("name") == name and "b" in entry.get("flags", ""):
                return True
        return False

    await eventually(blocked, every_s=0.001)


def test_backoff_schedule_grows_caps_and_jitters_within_bounds() -> None:
    b = Backoff(base_s=5.0, factor=2.0, cap_s=60.0, jitter=0.2)
    assert [b.delay_s(n, rand=0.0) for n in (1, 2, 3, 4, 5, 6)] == [5, 10, 20, 40, 60, 60]
    assert b.delay_s(1, rand=1.0) == pytest.approx(4.0)
    assert b.delay_s(0, rand=0.0) == 5.0  # attempt numbers below 1 act as the first
    rng = random.Random(7)
    for attempt in range(1, 10):
        raw = min(60.0, 5.0 * 2.0 ** (attempt - 1))
        samples = [b.delay_s(attempt, rand=rng.random()) for _ in range(200)]
        assert all(raw * 0.8 <= s <= raw for s in samples)
        assert max(samples) - min(samples) > raw * 0.1  # jitter actually spreads retries
    unjittered = Backoff(base_s=1.0, jitter=0.0)
    assert {unjittered.delay_s(3) for _ in range(20)} == {4.0}


async def test_failed_retryable_job_reappears_only_after_its_backoff(
    make_queue: QueueFactory,
) -> None:
    backoff = Backoff(base_s=0.5, factor=2.0, cap_s=10.0, jitter=0.2)
    q = make_queue(backoff=backoff)
    await q.enqueue(job("b1", max_attempts=3))
    for attempt in (1, 2):
        claim = await eventually(lambda: q.try_claim("w", 30), lambda c: isinstance(c, Claim))
        assert isinstance(claim, Claim)
        assert claim.job.attempt == attempt
        before = await server_ms(q.client)
        res = await q.fail("b1", claim.token, f"boom {attempt}", retryable=True, attempt=attempt)
        after = await server_ms(q.client)
        assert res.outcome == "retry" and res.retry_at is not None
        raw_ms = backoff.base_s * backoff.factor ** (attempt - 1) * 1000
        delay_lo = res.retry_at * 1000 - after
        delay_hi = res.retry_at * 1000 - before
        assert raw_ms * (1 - backoff.jitter) - 1 <= delay_hi and delay_lo <= raw_ms + 1
        rec = await q.get("b1")
        assert rec is not None and rec.state is JobState.DELAYED
        assert rec.error == f"boom {attempt}" and rec.due_at == res.retry_at
        assert (await q.counts())["delayed"] == 1
        # Not claimable before it is due; try_claim says how long to wait instead.
        early = await q.try_claim("w", 30)
        assert isinstance(early, float) and 0 < early <= raw_ms / 1000
        claim = await eventually(lambda: q.try_claim("w", 30), lambda c: isinstance(c, Claim))
        assert isinstance(claim, Claim) and claim.job.started_at is not None
        assert claim.job.started_at >= res.retry_at
        assert await q.release("b1", claim.token)  # back to waiting, attempt not spent
    claim = await eventually(lambda: q.try_claim("w", 30), lambda c: isinstance(c, Claim))
    assert isinstance(claim, Claim) and claim.job.attempt == 3
    res = await q.fail("b1", claim.token, "final", retryable=True, attempt=3)
    assert (res.outcome, res.retry_at) == ("failed", None)
    rec = await q.get("b1")
    assert rec is not None and rec.state is JobState.FAILED and rec.error == "final"


async def test_permanent_failure_does_not_retry(q: JobQueue) -> None:
    await q.enqueue(job("p1", max_attempts=5))
    claim = await q.claim("w", lease_s=30, timeout_s=5)
    assert claim is not None
    res = await q.fail("p1", claim.token, "bad input (exit 65)", retryable=False, attempt=1)
    assert res.outcome == "failed"
    counts = await q.counts()
    assert counts["failed"] == 1 and counts["delayed"] == 0
    assert await q.try_claim("w", 30) is None


async def test_long_error_text_is_truncated(q: JobQueue) -> None:
    await q.enqueue(job("e1", max_attempts=1))
    claim = await q.claim("w", lease_s=30, timeout_s=5)
    assert claim is not None
    await q.fail("e1", claim.token, "x" * 5000, retryable=True, attempt=1)
    rec = await q.get("e1")
    assert rec is not None and rec.error is not None and len(rec.error) == 1000


@pytest.mark.parametrize("delay", [-1.0, float("inf"), float("nan"), 1e20, MAX_DELAY_S + 1])
async def test_a_delay_out_of_bounds_is_refused_and_stores_nothing(
    q: JobQueue, delay: float
) -> None:
    """A due time that no clock can show (or in the past) would break every listing and
    view of the job for every tenant."""
    with pytest.raises(PayloadError) as caught:
        await q.enqueue(job("far"), delay_s=delay)
    assert caught.value.field == "delay_s"
    assert await q.get("far") is None


async def test_a_due_time_no_clock_can_show_still_reads(q: JobQueue, client: Redis) -> None:
    """One stored before delays were bounded: its views show no due time, not an error."""
    await q.enqueue(job("stored-far"), delay_s=60)
    record = json.loads(await client.hget(q.keys.jobs, "stored-far"))
    record["due_at"] = 1e23
    await client.hset(q.keys.jobs, "stored-far", json.dumps(record))
    rec = await q.get("stored-far")
    assert rec is not None
    assert job_view(rec, q.queue).due_at is None
    assert job_doc(rec, q.queue, SecretKeys())["due_at"] is None


async def test_delayed_enqueue_is_not_claimable_before_due(q: JobQueue) -> None:
    res = await q.enqueue(job("d1"), delay_s=1.0)
    assert res.state is JobState.DELAYED
    rec = await q.get("d1")
    assert rec is not None and rec.due_at is not None
    wait = await q.try_claim("w", 30)
    assert isinstance(wait, float) and 0 < wait <= 1.0
    claim = await q.claim("w", lease_s=30, timeout_s=10)
    assert claim is not None and claim.job.job_id == "d1"
    assert claim.job.started_at is not None and claim.job.started_at >= rec.due_at


async def test_blocked_claim_wakes_when_delayed_job_becomes_due_without_polling(
    make_queue: QueueFactory, client: Redis, claimer_client: Redis
) -> None:
    claimer = make_queue(redis_client=claimer_client)
    producer = make_queue()
    task = asyncio.create_task(claimer.claim("w", lease_s=30, timeout_s=20))
    await wait_until_blocked(client, claimer_client)
    sent_before = CountingConnection.sent
    start = time.monotonic()
    await producer.enqueue(job("wake-1"), delay_s=0.5)
    claim = await asyncio.wait_for(task, timeout=20)
    elapsed = time.monotonic() - start
    trips = CountingConnection.sent - sent_before
    print(f"delayed 0.5 s job claimed after {elapsed:.3f}s using {trips} round trips")
    assert claim is not None and claim.job.job_id == "wake-1"
    # Woken by the enqueue to re-arm for the due time, then by the timeout at the due time:
    # a handful of round trips, where polling every few ms would take hundreds.
    assert trips <= 6
    # Well short of a full idle block (4 s with redis-py's default 5 s socket timeout).
    assert elapsed < 3.5


async def test_enqueue_to_claim_latency_with_an_idle_blocked_claimer(
    make_queue: QueueFactory, client: Redis, claimer_client: Redis
) -> None:
    claimer = make_queue(redis_client=claimer_client)
    producer = make_queue()
    samples: list[float] = []
    for i in range(30):
        task = asyncio.create_task(claimer.claim("w", lease_s=30, timeout_s=20))
        await wait_until_blocked(client, claimer_client)
        start = time.perf_counter()
        await producer.enqueue(job(f"lat-{i}"))
        claim = await asyncio.wait_for(task, timeout=20)
        samples.append((time.perf_counter() - start) * 1000)
        assert claim is not None and claim.job.job_id == f"lat-{i}"
        assert await claimer.complete(claim.job.job_id, claim.token)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"enqueue-to-claim latency over {len(samples)}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert (await producer.counts())["completed"] == 30


async def test_a_delayed_job_that_is_due_counts_as_waiting_and_ages_from_its_due_time(
    q: JobQueue,
) -> None:
    """Due jobs move to `waiting` only at the next claim: with every slot busy they sat
    uncounted, and once moved they looked as old as their delay (a job scheduled an hour
    ahead read an hour old the moment it was due)."""
    await q.enqueue(job("due-soon"), delay_s=1.5)
    counts = await q.counts()
    assert (counts["waiting"], counts["delayed"]) == (0, 1)
    assert await q.oldest_waiting_age_s() is None

    async def counts_now() -> dict[str, int]:
        return await q.counts()

    await eventually(counts_now, lambda c: (c["waiting"], c["delayed"]) == (1, 0), timeout_s=5)
    age = await q.oldest_waiting_age_s()
    assert age is not None and age < 1.0, age
    claim = await q.claim("w", lease_s=30, timeout_s=5)  # promoted and taken at once
    assert claim is not None and claim.job.job_id == "due-soon"


async def test_a_job_given_back_ages_from_when_it_was_given_back(q: JobQueue) -> None:
    """Released at a shutdown (or recovered after a stall), a job is ready again from then,
    not from when it was first enqueued."""
    await q.enqueue(job("given-back"))
    claim = await q.claim("w", lease_s=30, timeout_s=5)
    assert claim is not None
    await asyncio.sleep(1.2)  # the job runs for a while: time passes, nothing is awaited
    assert await q.release("given-back", claim.token)
    age = await q.oldest_waiting_age_s()
    assert age is not None and age < 1.0, age
