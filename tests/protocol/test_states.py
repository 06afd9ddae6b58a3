"""Every state change the scripts make is an edge of supervisor.queue.states.TRANSITIONS, and the
state indexes always agree with the job records."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

import pytest
from redis.asyncio import Redis

from supervisor.queue.jobqueue import Backoff, Claim, JobQueue
from supervisor.queue.states import TRANSITIONS, JobState, can_transition, table_status

from .conftest import QueueFactory, eventually, job, server_ms


class Observer:
    """Diffs every job's state around each operation and checks the indexes."""

    def __init__(self, client: Redis, q: JobQueue) -> None:
        self.client = client
        self.q = q
        self.before: dict[str, JobState] = {}
        self.seen: set[tuple[JobState, JobState]] = set()

    async def states(self) -> dict[str, JobState]:
        raw: dict[Any, Any] = await self.client.hgetall(self.q.keys.jobs)
        return {k.decode(): JobState(json.loads(v)["state"]) for k, v in raw.items()}

    async def check_indexes(self, states: dict[str, JobState]) -> None:
        members: dict[str, list[str]] = {}
        for name, key in self.q.keys.all_state_sets().items():
            ids: list[Any] = await self.client.zrange(key, 0, -1)
            for m in ids:
                members.setdefault(m.decode(), []).append(name)
        assert members == {job_id: [state.value] for job_id, state in states.items()}

    async def step(self, op: Awaitable[Any]) -> Any:
        result = await op
        after = await self.states()
        for job_id, state in after.items():
            old = self.before.get(job_id)
            if old is not None and old != state:
                assert can_transition(old, state), f"{job_id}: {old} -> {state}"
                self.seen.add((old, state))
        await self.check_indexes(after)
        self.before = after
        return result


async def test_scripts_perform_exactly_the_declared_transitions(
    make_queue: QueueFactory, client: Redis
) -> None:
    q = make_queue(backoff=Backoff(base_s=0.05, jitter=0.0))
    o = Observer(client, q)

    async def claim() -> Claim:
        got = await o.step(q.try_claim("w", 30))
        assert isinstance(got, Claim)
        return got

    async def due(job_id: str) -> None:
        """Wait until a delayed job is due (an earlier claim may have promoted it already:
        claims promote due jobs to the back of the band, behind the jobs still waiting)."""
        rec = await q.get(job_id)
        assert rec is not None
        if rec.state is JobState.DELAYED:
            assert rec.due_at is not None
            due_ms = rec.due_at * 1000
            await eventually(lambda: server_ms(client), lambda now: now >= due_ms)

    await o.step(q.enqueue_many([job(f"j{i}", max_attempts=3) for i in range(8)]))
    await o.step(q.enqueue(job("dly"), delay_s=60))
    await o.step(q.enqueue(job("soon"), delay_s=0.05))
    assert await o.step(q.cancel("j7")) == "cancelled"  # waiting -> cancelled
    assert await o.step(q.cancel("dly")) == "cancelled"  # delayed -> cancelled

    c0 = await claim()  # waiting -> active
    assert await o.step(q.complete(c0.job.job_id, c0.token))  # active -> completed
    c1 = await claim()
    await o.step(q.fail(c1.job.job_id, c1.token, "x", retryable=False, attempt=1))  # -> failed
    c2 = await claim()
    await o.step(q.fail(c2.job.job_id, c2.token, "x", retryable=True, attempt=1))  # -> delayed
    c3 = await claim()
    assert await o.step(q.release(c3.job.job_id, c3.token))  # active -> waiting
    c4 = await claim()
    assert c4.job.job_id == c3.job.job_id
    assert await o.step(q.cancel(c4.job.job_id)) == "requested"  # stays active
    assert await o.step(q.ack_cancel(c4.job.job_id, c4.token))  # active -> cancelled
    c5 = await o.step(q.claim("w", lease_s=0.05, timeout_s=5))
    assert c5 is not None
    await eventually(lambda: o.step(q.reap()), lambda r: c5.job.job_id in r.recovered)

    # Promote a due delayed job without claiming it: a high-priority job is taken first.
    await due("soon")
    await due(c2.job.job_id)
    await o.step(q.enqueue(job("urgent", priority="high")))
    taken = await claim()  # delayed -> waiting for both due jobs
    assert taken.job.job_id == "urgent"
    assert await o.step(q.complete("urgent", taken.token))

    assert await o.step(q.retry(c1.job.job_id)) == "requeued"  # failed -> waiting
    assert await o.step(q.retry(c4.job.job_id)) == "requeued"  # cancelled -> waiting
    assert await o.step(q.retry(c0.job.job_id)) == "completed"  # completed: no way out

    declared = {(src, dst) for src, dsts in TRANSITIONS.items() for dst in dsts}
    assert o.seen == declared


def test_every_state_has_a_table_status_and_final_states_only_leave_by_retry() -> None:
    for state in JobState:
        assert table_status(state)
    assert TRANSITIONS[JobState.COMPLETED] == frozenset()
    assert TRANSITIONS[JobState.FAILED] == {JobState.WAITING}
    assert TRANSITIONS[JobState.CANCELLED] == {JobState.WAITING}


UNREADABLE = [
    b"not json",
    b"1",
    b"\xff\xfe",
    b"[1]",
    b'{"state": "waiting"}',  # no id
    b'{"id": "a-broken", "state": "waiting", "attempt": "x"}',
    b'{"id": "a-broken", "state": "active", "attempt": null}',
    b'{"id": "a-broken", "state": "active", "max_attempts": 3}',  # no attempt
    b'{"id": "a-broken", "state": "waiting", "attempt": 0}',  # no max_attempts
]


@pytest.mark.parametrize("corrupt", UNREADABLE)
@pytest.mark.parametrize("where", ["waiting", "delayed"])
async def test_a_record_no_script_can_read_is_set_aside_and_the_next_job_claimed(
    q: JobQueue, corrupt: bytes, where: str
) -> None:
    """A stored record that cannot be decoded (corruption, another version) neither fails
    every claim nor vanishes from the queue: it goes to the failed set, where retention
    removes it in time, and the next job is claimed."""
    await q.enqueue(job("a-broken"), delay_s=0.05 if where == "delayed" else 0)
    await q.enqueue(job("b-fine"), delay_s=0.1 if where == "delayed" else 0)
    await q.client.hset(q.keys.jobs, "a-broken", corrupt)
    got = await eventually_claim(q)
    assert got.job.job_id == "b-fine"
    assert await q.client.zscore(q.keys.failed, "a-broken") is not None
    assert await q.client.zscore(q.keys.waiting, "a-broken") is None
    assert await q.cancel("a-broken") == "missing"  # as a read says
    assert await q.retry("a-broken") == "missing"


async def eventually_claim(q: JobQueue) -> Any:
    got = await q.claim("w", lease_s=30, timeout_s=5)
    assert got is not None
    return got


@pytest.mark.parametrize("corrupt", UNREADABLE)
async def test_a_record_no_script_can_read_stops_no_reaping_or_purge(
    q: JobQueue, corrupt: bytes
) -> None:
    """Lease expiry and purges walk many jobs in one script: one unreadable record among
    them must neither fail the walk for every other job nor stay in its set."""
    for job_id in ("a-broken", "b-fine"):
        await q.enqueue(job(job_id))
    for _ in range(2):
        assert await q.claim("w", lease_s=0.05, timeout_s=5) is not None
    await q.client.hset(q.keys.jobs, "a-broken", corrupt)
    await eventually(lambda: _expired(q))
    await q.reap()
    rec = await q.get("b-fine")
    assert rec is not None and rec.state is JobState.WAITING  # recovered
    assert await q.client.zscore(q.keys.failed, "a-broken") is not None
    assert await q.client.zscore(q.keys.active, "a-broken") is None
    await q.enqueue(job("c-broken"))
    await q.client.hset(q.keys.jobs, "c-broken", b"not json")
    assert await q.purge("waiting") == 2
    assert await q.client.hget(q.keys.jobs, "c-broken") is None


async def _expired(q: JobQueue) -> bool:
    now = await server_ms(q.client)
    return await q.client.zcount(q.keys.active, "-inf", now) == 2
