"""A poison payload fails its own job and nothing else: no slot dies, no view breaks."""

from __future__ import annotations

import json
from typing import Any

import redis

from supervisor.keys import QueueKeys
from supervisor.states import JobState
from tests.daemon.conftest import SyncQueue, job, wait_until
from tests.daemon.test_ctl import ctl

DEPTH = 600


def deep(depth: int = DEPTH) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        node = {"n": node}
    return node


def plant_old_record(q: SyncQueue, raw_redis: redis.Redis, job_id: str) -> None:
    """A job stored by an older version that let any depth through: the record is real
    (enqueued through the protocol), only its payload is swapped for a deep one."""
    q.enqueue(job(job_id))
    payload = {**job(job_id), "metadata": deep()}
    raw_redis.hset(QueueKeys(q.queue).payloads, job_id, json.dumps(payload))


def test_deep_payload_refused_at_enqueue_naming_the_field(queue_name: str, q: SyncQueue) -> None:
    r = ctl(queue_name, "enqueue", "-", stdin=json.dumps({**job("deep"), "metadata": deep()}))
    assert r.returncode == 2, r.stderr
    assert "metadata" in r.stderr and "deep" in r.stderr
    assert "Traceback" not in r.stderr
    assert q.get("deep") is None


def test_deep_payload_in_redis_fails_its_job_and_both_slots_live_on(
    start_daemon, q: SyncQueue, raw_redis: redis.Redis, queue_name: str
) -> None:
    plant_old_record(q, raw_redis, "poison-1")
    plant_old_record(q, raw_redis, "poison-2")
    d = start_daemon()
    d.wait_ready()
    for job_id in ("poison-1", "poison-2"):
        wait_until(lambda j=job_id: q.get(j).state is JobState.FAILED, 20, f"{job_id} failed")
        rec = q.get(job_id)
        assert rec.attempt == 1  # the payload is the cause: not retried
        assert "nested" in (rec.error or "")
    assert "poison-1" in d.log() and "nested" in d.log()

    # Both slots still claim: two sleeping jobs run at the same time.
    q.enqueue(job("after-1", sleep=3))
    q.enqueue(job("after-2", sleep=3))
    wait_until(lambda: q.counts()["active"] == 2, 20, "two jobs running at once")
    workers = q.live_workers()
    assert [w["slots"] for w in workers] == [2]
    wait_until(lambda: q.get("after-2").state is JobState.COMPLETED, 30, "after-2 completed")
    assert q.get("after-1").state is JobState.COMPLETED

    # Every view of the poisoned job still answers.
    r = ctl(queue_name, "status", "poison-1")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    r = ctl(queue_name, "status", "poison-1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "failed"
    assert d.proc.poll() is None
