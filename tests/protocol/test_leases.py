"""Leases: fencing by token, renewal, reaping of expired leases, stall accounting."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from redis.asyncio import Redis

from supervisor.queue.jobqueue import WAKE_CAP, Claim, JobQueue, ReapResult, Retention
from supervisor.queue.states import JobState

from .conftest import QueueFactory, eventually, job, server_ms, start_claimer


async def claim_one(q: JobQueue, lease_s: float, worker: str = "w") -> Claim:
    got = await q.claim(worker, lease_s=lease_s, timeout_s=5)
    assert got is not None
    return got


async def reap_until(q: JobQueue, job_id: str, timeout_s: float = 10.0) -> ReapResult:
    """Reap repeatedly until `job_id`'s expired lease has been handled."""

    async def probe() -> ReapResult:
        return await q.reap()

    def handled(r: ReapResult) -> bool:
        return job_id in (*r.recovered, *r.dead_lettered, *r.cancelled)

    return await eventually(probe, handled, timeout_s=timeout_s)


async def snapshot(client: Redis, q: JobQueue, job_id: str) -> tuple[object, ...]:
    return (
        await client.hget(q.keys.jobs, job_id),
        await client.hget(q.keys.payloads, job_id),
        await client.xlen(q.keys.events),
        tuple((await q.counts()).values()),
        await client.zscore(q.keys.active, job_id),
    )


async def assert_stale_token_changes_nothing(
    client: Redis, q: JobQueue, job_id: str, token: str
) -> None:
    before = await snapshot(client, q, job_id)
    renewed = await q.renew(job_id, token, 60)
    assert not renewed.held and renewed.lease_until is None
    assert not await q.progress(job_id, token, 99, "stale")
    assert not await q.complete(job_id, token, {"stale": True})
    failed = await q.fail(job_id, token, "stale", retryable=True, attempt=1)
    assert failed.outcome == "lost"
    failed = await q.fail(job_id, token, "stale", retryable=False, attempt=1)
    assert failed.outcome == "lost"
    assert not await q.release(job_id, token)
    assert not await q.ack_cancel(job_id, token)
    assert await snapshot(client, q, job_id) == before


async def test_a_claim_sent_again_with_its_token_takes_no_second_job(q: JobQueue) -> None:
    """A claim whose reply was lost (a socket timeout while Redis ran the script) is sent
    again with the same token, by redis-py's retry or the daemon's own: it gets the job it
    already took. A second job taken there would sit leased to nobody for a whole lease
    and count a stall against it."""
    await q.enqueue_many([job("first"), job("second")])
    taken = await q.try_claim("w", 30, token="lost-reply")
    again = await q.try_claim("w", 60, token="lost-reply")  # leased anew, from now
    assert isinstance(taken, Claim) and isinstance(again, Claim)
    assert (again.job.job_id, again.token, again.job.attempt) == ("first", "lost-reply", 1)
    assert taken.job.lease_until is not None and again.job.lease_until is not None
    assert again.job.lease_until >= taken.job.lease_until + 29
    assert again.payload == taken.payload
    assert (await q.counts())["waiting"] == 1
    assert await q.complete("first", "lost-reply", None)
    # Once its job has moved on, the token takes nothing; a new one takes the next job.
    assert not isinstance(await q.try_claim("w", 30, token="lost-reply"), Claim)
    nxt = await q.try_claim("w", 30)
    assert isinstance(nxt, Claim) and nxt.job.job_id == "second"


async def test_wrong_token_changes_nothing_on_an_active_job(q: JobQueue, client: Redis) -> None:
    await q.enqueue(job("f1"))
    claim = await claim_one(q, lease_s=30)
    await assert_stale_token_changes_nothing(client, q, "f1", "0" * 32)
    await assert_stale_token_changes_nothing(client, q, "f1", "")
    assert await q.progress("f1", claim.token, 10, "real")
    assert await q.complete("f1", claim.token)
    # After the job finished, even its own token is stale.
    await assert_stale_token_changes_nothing(client, q, "f1", claim.token)


async def test_stale_token_after_lease_expired_and_another_holder_took_over(
    q: JobQueue, client: Redis
) -> None:
    await q.enqueue(job("f2"))
    first = await claim_one(q, lease_s=0.2, worker="old")
    assert await q.progress("f2", first.token, 30, "before expiry")
    await reap_until(q, "f2")
    # Expired and recovered: the old holder can no longer touch it while it waits...
    await assert_stale_token_changes_nothing(client, q, "f2", first.token)
    second = await claim_one(q, lease_s=30, worker="new")
    assert second.token != first.token and second.job.worker_id == "new"
    # ... nor once a new holder has it.
    await assert_stale_token_changes_nothing(client, q, "f2", first.token)
    assert (await q.renew("f2", second.token, 30)).held
    assert await q.complete("f2", second.token, "ok")
    rec = await q.get("f2")
    assert rec is not None and rec.state is JobState.COMPLETED and rec.result == "ok"


async def test_renew_extends_lease_so_reaper_leaves_job_alone(q: JobQueue) -> None:
    await q.enqueue(job("r1"))
    claim = await claim_one(q, lease_s=1.0)
    first_deadline = claim.job.lease_until
    assert first_deadline is not None
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        renewed = await q.renew("r1", claim.token, 1.0)
        assert renewed.held and not renewed.cancel_requested
        assert (await q.reap()).recovered == []
        await asyncio.sleep(0.1)  # the renewal cadence, not a wait for a condition
    rec = await q.get("r1")
    assert rec is not None and rec.state is JobState.ACTIVE and rec.stalls == 0
    assert rec.lease_until is not None and rec.lease_until > first_deadline


async def test_expired_lease_is_recovered_as_a_stall_not_an_attempt(q: JobQueue) -> None:
    await q.enqueue_many([job("s1"), job("s2")])
    claim = await claim_one(q, lease_s=0.1)
    assert claim.job.job_id == "s1" and claim.job.attempt == 1
    result = await reap_until(q, "s1")
    assert result.recovered == ["s1"] and result.dead_lettered == []
    rec = await q.get("s1")
    assert rec is not None
    assert (rec.state, rec.attempt, rec.stalls, rec.worker_id) == (JobState.WAITING, 0, 1, None)
    # A recovered job goes to the front of its band, ahead of s2.
    again = await claim_one(q, lease_s=30)
    assert again.job.job_id == "s1" and again.job.attempt == 1 and again.job.stalls == 1


async def test_the_wake_list_stays_capped_whatever_pushes_to_it(q: JobQueue, client: Redis) -> None:
    """Retry, release, a retryable failure and a reap each push a wake token; with no
    claimer to take them, the list stays within its cap as it does for enqueue."""
    await q.enqueue_many([job(f"w{i}", max_attempts=5) for i in range(4)])
    claims = [await claim_one(q, lease_s=30 if i < 3 else 0.05) for i in range(4)]
    await client.delete(q.keys.wake)
    await client.lpush(q.keys.wake, *(["1"] * WAKE_CAP))
    assert await q.release("w0", claims[0].token)
    assert (await q.fail("w1", claims[1].token, "x", retryable=True, attempt=1)).outcome == "retry"
    assert await q.complete("w2", claims[2].token, None)
    assert (await reap_until(q, "w3")).recovered == ["w3"]
    assert await q.cancel("w0") == "cancelled"
    assert await q.retry("w0") == "requeued"
    assert await client.llen(q.keys.wake) <= WAKE_CAP


async def test_job_past_the_stall_limit_is_dead_lettered(
    make_queue: QueueFactory, client: Redis
) -> None:
    q = make_queue(retention=Retention(stall_limit=2))
    await q.enqueue(job("dl", max_attempts=5))
    for stall in (1, 2):
        await claim_one(q, lease_s=0.05)
        assert (await reap_until(q, "dl")).recovered == ["dl"]
        rec = await q.get("dl")
        assert rec is not None and rec.stalls == stall and rec.state is JobState.WAITING
    await claim_one(q, lease_s=0.05, worker="host/0/1")
    assert (await reap_until(q, "dl")).dead_lettered == ["dl"]
    rec = await q.get("dl")
    assert rec is not None and rec.state is JobState.FAILED
    # The row says which attempt ran last and where, as for any other final state; the
    # stalls spent no attempt, so that is the first.
    assert (rec.stalls, rec.attempt, rec.worker_id) == (3, 1, "host/0/1")
    # Watchers (the dashboard's failed per minute) learn of the final state as of any other.
    events = await client.xrange(q.keys.events)
    kinds = [e[b"type"] for _id, e in events if e[b"job"] == b"dl"]
    assert kinds[-2:] == [b"stalled", b"failed"], kinds
    assert rec.error is not None and "stalled 3 times" in rec.error
    counts = await q.counts()
    assert counts["failed"] == 1 and counts["waiting"] == counts["active"] == 0
    assert await client.hget(q.keys.stats, "stalled") == b"3"


async def test_concurrent_reapers_handle_each_expired_job_once(
    make_queue: QueueFactory, redis_url: str
) -> None:
    q = make_queue()
    ids = [f"cr-{i}" for i in range(60)]
    await q.enqueue_many([job(i) for i in ids])
    deadlines = [(await claim_one(q, lease_s=0.05)).job.lease_until for _ in ids]
    last_deadline = max(d for d in deadlines if d is not None)

    async def server_s() -> float:
        return await server_ms(q.client) / 1000.0

    await eventually(server_s, lambda now: now > last_deadline)
    # Each reaper on its own connection, as separate daemons would be.
    clients = [Redis.from_url(redis_url) for _ in range(6)]
    try:
        reapers = [make_queue(redis_client=c) for c in clients]
        results = await asyncio.gather(*(r.reap() for r in reapers))
    finally:
        for c in clients:
            await c.aclose()
    handled = [i for r in results for i in (*r.recovered, *r.dead_lettered, *r.cancelled)]
    assert sorted(handled) == sorted(ids)
    counts = await q.counts()
    assert counts["active"] == 0 and counts["waiting"] == len(ids)
    for rec in (await q.list_jobs("waiting", limit=100))[0]:
        assert rec.stalls == 1


async def test_sigkilled_claimer_job_is_recovered_after_one_lease(
    q: JobQueue, client: Redis, redis_url: str, queue_name: str
) -> None:
    await q.enqueue(job("k1", timeout_s=3600))
    proc = await start_claimer("hold", redis_url, queue_name, "doomed", "1.0")
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode().split()
    assert line[:2] == ["claimed", "k1"]
    stale_token = line[2]
    os.kill(proc.pid, signal.SIGKILL)
    assert await proc.wait() == -signal.SIGKILL
    killed_at = time.monotonic()

    await reap_until(q, "k1", timeout_s=15)  # far below the job's 3600 s timeout
    recovered_after = time.monotonic() - killed_at
    print(f"SIGKILLed holder's job recovered {recovered_after:.2f}s after the kill (lease 1 s)")
    rec = await q.get("k1")
    assert rec is not None
    assert (rec.state, rec.stalls, rec.attempt) == (JobState.WAITING, 1, 0)

    taker = await claim_one(q, lease_s=30, worker="survivor")
    assert taker.job.job_id == "k1" and taker.job.attempt == 1
    await assert_stale_token_changes_nothing(client, q, "k1", stale_token)
    assert await q.complete("k1", taker.token)


async def test_progress_is_clamped_monotonic_and_ignores_non_finite_values(
    q: JobQueue,
) -> None:
    await q.enqueue(job("pg"))
    claim = await claim_one(q, lease_s=30)
    seen = []
    for pct in (10.0, 5.0, float("nan"), float("inf"), 250.0, -3.0):
        assert await q.progress("pg", claim.token, pct, f"at {pct}")
        rec = await q.get("pg")
        assert rec is not None
        seen.append(rec.progress)
    assert seen == [10.0, 10.0, 10.0, 10.0, 100.0, 100.0]
    rec = await q.get("pg")
    assert rec is not None and rec.progress_message == "at -3.0"
