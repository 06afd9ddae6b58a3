"""Enqueue: validation, idempotency, bulk in one round trip, priorities and FIFO order."""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis.asyncio import Redis

from supervisor.queue.jobqueue import Claim, JobQueue
from supervisor.queue.payload import (
    MAX_PAYLOAD_BYTES,
    MAX_SECRET_VALUES,
    PayloadError,
    TenantConflict,
)
from supervisor.queue.states import JobState

from .conftest import CountingConnection, QueueFactory, job, queue_keys


async def drain_order(q: JobQueue) -> list[str]:
    order: list[str] = []
    while isinstance(got := await q.try_claim("w", lease_s=30), Claim):
        order.append(got.job.job_id)
    return order


async def test_enqueue_stores_a_waiting_job_with_its_payload(q: JobQueue) -> None:
    res = await q.enqueue(job("a1", metadata={"k": "v"}, timeout_s=60, max_attempts=5))
    assert (res.job_id, res.created, res.state) == ("a1", True, JobState.WAITING)
    rec = await q.get("a1", with_payload=True)
    assert rec is not None
    assert rec.state is JobState.WAITING and rec.attempt == 0 and rec.max_attempts == 5
    assert rec.tenant_id == "tenant-a" and rec.priority == "normal"
    assert rec.payload is not None and rec.payload["metadata"] == {"k": "v"}
    assert (await q.counts())["waiting"] == 1


async def test_second_enqueue_of_waiting_or_active_job_creates_nothing(
    q: JobQueue, client: Redis
) -> None:
    await q.enqueue(job("dup-w"))
    await q.enqueue(job("dup-a"))
    claim = await q.try_claim("w", lease_s=30)
    assert isinstance(claim, Claim) and claim.job.job_id == "dup-w"
    # dup-w is now active, dup-a waiting.
    before_counts = await q.counts()
    before_events = await client.xlen(q.keys.events)
    before_payloads = await client.hgetall(q.keys.payloads)
    before_records = await client.hgetall(q.keys.jobs)

    again = await q.enqueue_many(
        [job("dup-w", priority="high"), job("dup-a", priority="high", metadata={"x": 1})]
    )
    assert [(r.job_id, r.created, r.state) for r in again] == [
        ("dup-w", False, JobState.ACTIVE),
        ("dup-a", False, JobState.WAITING),
    ]
    # Another tenant's id refuses the whole batch, and changes nothing either.
    with pytest.raises(TenantConflict) as refused:
        await q.enqueue_many([job("fresh"), job("dup-a", tenant_id="other")])
    assert refused.value.field == "job_id" and "another tenant" in str(refused.value)
    assert await q.get("fresh") is None
    assert await q.counts() == before_counts
    assert await client.xlen(q.keys.events) == before_events
    assert await client.hgetall(q.keys.payloads) == before_payloads
    assert await client.hgetall(q.keys.jobs) == before_records


async def test_bulk_enqueue_is_one_round_trip(make_queue: QueueFactory, redis_url: str) -> None:
    counting = Redis.from_url(redis_url, connection_class=CountingConnection)
    try:
        q = make_queue(redis_client=counting)
        await q.enqueue(job("warm-up"))  # loads the script into Redis' cache if needed
        before = CountingConnection.sent
        results = await q.enqueue_many([job(f"bulk-{i}") for i in range(500)])
        assert CountingConnection.sent - before == 1
        assert all(r.created for r in results) and len(results) == 500
        assert (await q.counts())["waiting"] == 501
    finally:
        await counting.aclose()


async def test_bulk_enqueue_is_all_or_nothing(q: JobQueue, client: Redis) -> None:
    batch = [job("ok-1"), job("ok-2"), job("bad", data_source={"type": "ftp"}), job("ok-3")]
    with pytest.raises(PayloadError) as err:
        await q.enqueue_many(batch)
    assert err.value.field == "data_source.type"
    with pytest.raises(PayloadError, match="appears twice"):
        await q.enqueue_many([job("twice"), job("twice")])
    assert await queue_keys(client, q.queue) == []


BAD_PAYLOADS: list[tuple[str, Any, str]] = [
    ("empty job_id", job(""), "job_id"),
    ("job_id with a space", job("a b"), "job_id"),
    ("job_id with a slash", job("a/b"), "job_id"),
    ("job_id of 129 chars", job("x" * 129), "job_id"),
    ("job_id not a string", job(12), "job_id"),  # type: ignore[arg-type]
    ("unknown data_source.type", job("j", data_source={"type": "ftp"}), "data_source.type"),
    ("data_source missing", {"job_id": "j", "tenant_id": "t"}, "data_source"),
    ("bad priority", job("j", priority="urgent"), "priority"),
    ("missing tenant", {"job_id": "j", "data_source": {"type": "text"}}, "tenant_id"),
    ("empty tenant", job("j", tenant_id=""), "tenant_id"),
    ("not an object", ["job_id", "j"], "payload"),
    ("a string", json.dumps(job("j")), "payload"),
    ("oversized", job("j", data_source={"type": "text", "x": "x" * MAX_PAYLOAD_BYTES}), "payload"),
    ("unknown field", job("j", colour="red"), "colour"),
    ("bad timeout", job("j", timeout_s=-1), "timeout_s"),
    ("bad max_attempts", job("j", max_attempts=0), "max_attempts"),
    ("metadata not an object", job("j", metadata=[1]), "metadata"),
    # A Python producer's keys need not be strings, nor comparable with each other.
    ("keys that are not strings", {**job("j"), 1: "a", None: "b"}, "payload"),
]


@pytest.mark.parametrize(
    ("payload", "field"),
    [(p, f) for _, p, f in BAD_PAYLOADS],
    ids=[name for name, _, _ in BAD_PAYLOADS],
)
async def test_bad_payload_rejected_naming_the_field_and_nothing_stored(
    q: JobQueue, client: Redis, payload: Any, field: str
) -> None:
    with pytest.raises(PayloadError) as err:
        await q.enqueue(payload)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    assert await queue_keys(client, q.queue) == []


async def test_bad_payload_message_never_echoes_secrets(q: JobQueue) -> None:
    secret = "tok-very-secret-123"
    with pytest.raises(PayloadError) as err:
        await q.enqueue(
            job("j", priority="nope", data_source={"type": "url", "trial_token": secret})
        )
    assert secret not in str(err.value)


async def test_negative_delay_rejected(q: JobQueue, client: Redis) -> None:
    with pytest.raises(PayloadError, match="delay_s"):
        await q.enqueue(job("j"), delay_s=-1)
    assert await queue_keys(client, q.queue) == []


async def test_high_priority_first_then_fifo_within_priority(q: JobQueue) -> None:
    await q.enqueue_many([job("n1"), job("h1", priority="high"), job("n2")])
    await q.enqueue(job("h2", priority="high"))
    await q.enqueue(job("n3"))
    assert await drain_order(q) == ["h1", "h2", "n1", "n2", "n3"]


async def test_release_puts_job_at_front_of_its_band_without_spending_an_attempt(
    q: JobQueue,
) -> None:
    await q.enqueue_many([job("h1", priority="high"), job("n1"), job("n2"), job("n3")])
    h1 = await q.try_claim("w", lease_s=30)
    n1 = await q.try_claim("w", lease_s=30)
    assert isinstance(h1, Claim) and isinstance(n1, Claim)
    assert n1.job.attempt == 1
    await q.enqueue(job("h2", priority="high"))
    assert await q.release("n1", n1.token)
    rec = await q.get("n1")
    assert rec is not None and rec.state is JobState.WAITING and rec.attempt == 0
    assert rec.worker_id is None and rec.lease_until is None
    # n1 goes before n2 (front of normal) but after the high job h2.
    assert await drain_order(q) == ["h2", "n1", "n2", "n3"]
    again = await q.get("n1")
    assert again is not None and again.attempt == 1


async def test_try_claim_on_empty_queue_returns_none(q: JobQueue) -> None:
    assert await q.try_claim("w", lease_s=1) is None
    assert await q.claim("w", lease_s=1, timeout_s=0.05) is None


async def test_enqueue_counts_secrets_under_the_deployments_own_names(
    client: Redis, queue_name: str
) -> None:
    """A producer's queue knows INGEST_SECRET_KEYS as the daemons do: a payload the claim
    would refuse for its number of secrets is refused at enqueue, not accepted and failed."""
    many = {f"k{i}": {"house_pin": f"pin-{i:05d}"} for i in range(MAX_SECRET_VALUES + 1)}
    plain = JobQueue(client, queue_name)
    assert (await plain.enqueue(job("ok-here", metadata=many))).created
    deployed = JobQueue(client, queue_name, secret_keys=["house_pin"])
    with pytest.raises(PayloadError, match="secret-named"):
        await deployed.enqueue(job("not-here", metadata=many))
    assert await deployed.get("not-here") is None
