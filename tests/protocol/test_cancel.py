"""Cancel in each state (with the holder's notification), retry, purge."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from supervisor.queue.jobqueue import Claim, JobQueue
from supervisor.queue.payload import PayloadError
from supervisor.queue.states import JobState

from .conftest import events_of, eventually, job, queue_keys


async def claim_one(q: JobQueue) -> Claim:
    got = await q.claim("w", lease_s=30, timeout_s=5)
    assert got is not None
    return got


async def test_cancel_waiting_and_delayed_jobs_at_once(q: JobQueue) -> None:
    await q.enqueue(job("cw"))
    await q.enqueue(job("cd"), delay_s=60)
    assert await q.cancel("cw") == "cancelled"
    assert await q.cancel("cd") == "cancelled"
    for job_id in ("cw", "cd"):
        rec = await q.get(job_id)
        assert rec is not None and rec.state is JobState.CANCELLED
        assert rec.finished_at is not None and rec.due_at is None
    assert await q.counts() == {
        "waiting": 0, "delayed": 0, "active": 0, "completed": 0, "failed": 0, "cancelled": 2,
    }  # fmt: skip
    assert await q.try_claim("w", 30) is None
    assert await q.cancel("cw") == "cancelled"  # a second cancel is harmless
    assert await q.cancel("nope") == "missing"


async def test_cancel_active_job_notifies_holder_who_acknowledges(
    q: JobQueue, client: Redis
) -> None:
    await q.enqueue(job("ca"))
    claim = await claim_one(q)
    heard: asyncio.Queue[str] = asyncio.Queue()

    async def listen() -> None:
        async for job_id in q.cancel_requests():
            await heard.put(job_id)

    listener = asyncio.create_task(listen())
    try:

        async def subscribed() -> int:
            reply = await client.pubsub_numsub(q.keys.cancel_channel)
            return int(reply[0][1])

        await eventually(subscribed)
        assert await q.cancel("ca") == "requested"
        assert await asyncio.wait_for(heard.get(), timeout=5) == "ca"
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)

    rec = await q.get("ca")
    assert rec is not None and rec.state is JobState.ACTIVE and rec.cancel_requested
    renewed = await q.renew("ca", claim.token, 30)
    assert renewed.held and renewed.cancel_requested
    assert not await q.ack_cancel("ca", "0" * 32)
    assert await q.ack_cancel("ca", claim.token)
    rec = await q.get("ca")
    assert rec is not None and rec.state is JobState.CANCELLED and rec.lease_until is None
    counts = await q.counts()
    assert counts["active"] == 0 and counts["cancelled"] == 1
    kinds = [e["type"] for e in await events_of(client, q.keys.events)]
    assert kinds == ["enqueued", "started", "cancel_requested", "cancelled"]


async def test_cancel_requested_job_whose_holder_died_ends_cancelled(q: JobQueue) -> None:
    await q.enqueue(job("cz"))
    await q.claim("w", lease_s=0.05, timeout_s=5)
    assert await q.cancel("cz") == "requested"
    result = await eventually(q.reap, lambda r: "cz" in r.cancelled)
    assert result.recovered == [] and result.dead_lettered == []
    rec = await q.get("cz")
    assert rec is not None and rec.state is JobState.CANCELLED
    # The attempt that was running when its holder died, and that holder, stay on record.
    assert (rec.attempt, rec.worker_id) == (1, "w")


async def test_cancel_of_a_finished_job_changes_nothing(q: JobQueue, client: Redis) -> None:
    await q.enqueue_many([job("done"), job("dead", max_attempts=1)])
    first = await claim_one(q)
    assert await q.complete(first.job.job_id, first.token, {"n": 1})
    second = await claim_one(q)
    await q.fail(second.job.job_id, second.token, "x", retryable=False, attempt=1)
    before = await client.hgetall(q.keys.jobs), await client.xlen(q.keys.events)
    assert await q.cancel("done") == "completed"
    assert await q.cancel("dead") == "failed"
    assert (await client.hgetall(q.keys.jobs), await client.xlen(q.keys.events)) == before


async def test_retry_failed_and_cancelled_jobs_with_fresh_attempts(q: JobQueue) -> None:
    await q.enqueue_many([job("rf", max_attempts=1), job("rc"), job("rd")])
    claim = await claim_one(q)
    await q.fail("rf", claim.token, "broken", retryable=True, attempt=1)
    assert await q.cancel("rc") == "cancelled"
    done = await claim_one(q)
    assert done.job.job_id == "rd" and await q.complete("rd", done.token)

    assert await q.retry("rf") == "requeued"
    assert await q.retry("rc") == "requeued"
    assert await q.retry("rd") == "completed"
    assert await q.retry("nope") == "missing"
    assert await q.retry("rf") == "waiting"  # already waiting: reported, not duplicated
    counts = await q.counts()
    assert (counts["waiting"], counts["failed"], counts["cancelled"]) == (2, 0, 0)
    rec = await q.get("rf")
    assert rec is not None and rec.attempt == 0 and rec.error is None and rec.stalls == 0
    again = await claim_one(q)
    assert again.job.job_id == "rf" and again.job.attempt == 1
    assert (await claim_one(q)).job.job_id == "rc"


async def test_purge_removes_jobs_and_payloads_of_one_state(q: JobQueue, client: Redis) -> None:
    await q.enqueue_many([job(f"pw-{i}") for i in range(1200)])  # more than one purge batch
    await q.enqueue(job("pd"), delay_s=60)
    held = await claim_one(q)
    assert await q.purge("waiting") == 1199
    assert await q.purge(JobState.DELAYED) == 1
    with pytest.raises(ValueError, match="active"):
        await q.purge("active")
    assert await q.try_claim("w", 30) is None
    assert await client.hlen(q.keys.jobs) == 1 and await client.hlen(q.keys.payloads) == 1
    assert await q.complete(held.job.job_id, held.token)
    assert await q.purge("completed") == 1
    assert await client.hlen(q.keys.jobs) == 0 and await client.hlen(q.keys.payloads) == 0
    state_keys = set(q.keys.all_state_sets().values())
    assert not state_keys & set(await queue_keys(client, q.queue))


async def test_cancel_and_retry_reject_bad_job_ids(q: JobQueue) -> None:
    for bad in ("", "a b", "x" * 129):
        with pytest.raises(PayloadError, match="job_id"):
            await q.cancel(bad)
        with pytest.raises(PayloadError, match="job_id"):
            await q.retry(bad)
        with pytest.raises(PayloadError, match="job_id"):
            await q.get(bad)


async def test_a_job_given_back_or_failed_with_its_cancel_pending_ends_cancelled_at_once(
    q: JobQueue, client: Redis
) -> None:
    """Cancelled while it ran, then given back by its holder (a shutdown) or failed into a
    retry before the cancel was acknowledged: it ends cancelled there and then, not after
    a wait in the queue (a backoff can be an hour) showing 'queued' to the web app."""
    await q.enqueue_many([job("cr-rel"), job("cr-fail")])
    rel, failing = await claim_one(q), await claim_one(q)
    assert await q.cancel("cr-rel") == "requested"
    assert await q.cancel("cr-fail") == "requested"
    assert await q.release("cr-rel", rel.token) == "cancelled"
    given_back = await q.get("cr-rel")  # unspent, as a release is: no run of its own
    assert given_back is not None and given_back.attempt == 0
    assert given_back.started_at is None and given_back.worker_id is None
    retry = await q.fail("cr-fail", failing.token, "killed", retryable=True, attempt=1)
    assert retry.outcome == "cancelled"
    counts = await q.counts()
    assert (counts["cancelled"], counts["delayed"], counts["waiting"]) == (2, 0, 0)
    for job_id in ("cr-rel", "cr-fail"):
        rec = await q.get(job_id)
        assert rec is not None and rec.state is JobState.CANCELLED and rec.finished_at
    failed = await q.get("cr-fail")
    assert failed is not None and failed.error == "killed"  # why its last attempt ended
    kinds = [e["type"] for e in await events_of(client, q.keys.events) if e["job"] == "cr-rel"]
    assert kinds == ["enqueued", "started", "cancel_requested", "cancelled"]
    assert await q.retry("cr-rel") == "requeued"  # a retry starts afresh, cancel forgotten
    again = await q.try_claim("w", 30)
    assert isinstance(again, Claim) and again.job.job_id == "cr-rel"
    assert not again.job.cancel_requested
    # A failure that cannot be retried is what it is: failed.
    await q.enqueue(job("cr-last", max_attempts=1))
    last = await claim_one(q)
    assert await q.cancel("cr-last") == "requested"
    assert (await q.fail("cr-last", last.token, "x", retryable=True, attempt=1)).outcome == (
        "failed"
    )


async def _waiting_with_cancel_pending(q: JobQueue, client: Redis, job_id: str) -> None:
    """A job waiting with its cancel pending, as a daemon of an earlier version left one
    it gave back unacknowledged (a mixed fleet during a rolling upgrade)."""
    await q.enqueue(job(job_id))
    raw = await client.hget(q.keys.jobs, job_id)
    assert raw is not None
    rec = json.loads(raw)
    rec["cancel_requested"] = True
    await client.hset(q.keys.jobs, job_id, json.dumps(rec))


async def test_a_job_left_waiting_with_its_cancel_pending_is_cancelled_not_started(
    q: JobQueue, client: Redis
) -> None:
    await _waiting_with_cancel_pending(q, client, "pending-old")
    await q.enqueue(job("next"))
    got = await q.claim("w", lease_s=30, timeout_s=10)  # skips the cancelled one
    assert got is not None and got.job.job_id == "next"
    rec = await q.get("pending-old")
    assert rec is not None and rec.state is JobState.CANCELLED


async def test_a_retry_of_a_job_waiting_with_a_cancel_pending_takes_the_cancel_back(
    q: JobQueue, client: Redis
) -> None:
    """An operator's retry of a job waiting with its cancel pending means run it: the
    cancel is taken back, and the next claim starts it."""
    await _waiting_with_cancel_pending(q, client, "pending")
    assert await q.retry("pending") == "requeued"
    again = await q.try_claim("w", 30)
    assert isinstance(again, Claim) and again.job.job_id == "pending"
    assert not again.job.cancel_requested
    assert await q.retry("pending") == "active"


async def test_cancel_and_retry_on_behalf_of_a_tenant_touch_only_its_jobs(q: JobQueue) -> None:
    """The tenant check is part of the script: between a separate check and the change,
    the id could pass to another tenant's job (the first left Redis, another took its id)."""
    await q.enqueue(job("theirs", tenant_id="tenant-b"))
    before = await q.get("theirs")
    assert await q.cancel("theirs", tenant="tenant-a") == "missing"
    rec = await q.get("theirs")
    assert before is not None and rec is not None
    assert rec.state is JobState.WAITING and rec.rev == before.rev
    assert await q.cancel("theirs", tenant="tenant-b") == "cancelled"
    assert await q.retry("theirs", tenant="tenant-a") == "missing"
    rec = await q.get("theirs")
    assert rec is not None and rec.state is JobState.CANCELLED
    assert await q.retry("theirs", tenant="tenant-b") == "requeued"
    assert await q.cancel("theirs") == "cancelled"  # no tenant: an all-tenant caller
    assert await q.retry("theirs") == "requeued"
