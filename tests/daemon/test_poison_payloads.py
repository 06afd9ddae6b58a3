"""A poison payload fails its own job and nothing else: no slot dies, no view breaks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from supervisor.queue.keys import QueueKeys
from supervisor.queue.payload import MAX_SECRET_VALUES
from supervisor.queue.states import JobState
from tests.daemon.conftest import SyncQueue, job, read_runs, wait_until
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
    for job_id in ("after-1", "after-2"):
        wait_until(lambda j=job_id: q.get(j).state is JobState.COMPLETED, 30, f"{job_id} completed")

    # Every view of the poisoned job still answers.
    r = ctl(queue_name, "status", "poison-1")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    r = ctl(queue_name, "status", "poison-1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "failed"
    assert d.proc.poll() is None


def test_a_payload_planted_in_redis_gets_the_checks_of_enqueue(
    start_daemon, q: SyncQueue, raw_redis: redis.Redis
) -> None:
    """A timeout that is not a number, or a payload without its tenant, written into Redis
    by other means fails its job once, with the rule it broke; it is not retried."""
    planted = {
        "bad-timeout": {**job("bad-timeout"), "timeout_s": "abc"},
        "no-tenant": {k: v for k, v in job("no-tenant").items() if k != "tenant_id"},
    }
    for job_id, payload in planted.items():
        q.enqueue(job(job_id))
        raw_redis.hset(QueueKeys(q.queue).payloads, job_id, json.dumps(payload))
    # Secrets under a name only this daemon knows as secret: each value costs a scrub of
    # every line, error and result string, so their number is bounded too.
    many = {f"k{i}": {"house_pin": f"pin-{i:05d}"} for i in range(MAX_SECRET_VALUES + 1)}
    q.enqueue(job("many-secrets"))
    raw_redis.hset(
        QueueKeys(q.queue).payloads,
        "many-secrets",
        json.dumps({**job("many-secrets"), "metadata": many}),
    )
    planted["many-secrets"] = {}
    d = start_daemon(INGEST_SECRET_KEYS="house_pin")
    for job_id, field in (
        ("bad-timeout", "timeout_s"),
        ("no-tenant", "tenant_id"),
        ("many-secrets", "secret-named"),
    ):
        wait_until(lambda j=job_id: q.get(j).state is JobState.FAILED, 20, f"{job_id} failed")
        rec = q.get(job_id)
        assert rec.attempt == 1 and field in (rec.error or ""), rec.error
    assert "Traceback" not in d.log()


async def test_a_slot_task_that_ends_is_logged_and_restarted(
    queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon's own slot keeper, on a real queue: a slot task that ends while the daemon
    is not stopping (here: cancelled from outside) is logged and started again, and the
    heartbeat counts only live slots."""
    from redis.asyncio import Redis

    from supervisor.daemon import Daemon
    from supervisor.execution_context import ExecutionContext
    from supervisor.main import build_runner_config
    from supervisor.queue.jobqueue import JobQueue
    from supervisor.sdnotify import SystemdNotifier
    from supervisor.settings import load_settings
    from supervisor.sinks import SinkFanout
    from tests.conftest import REDIS_URL
    from tests.waiting import poll

    client = Redis.from_url(REDIS_URL)
    settings = load_settings([], env={})
    ctx = ExecutionContext(
        queue=JobQueue(client, queue_name),
        sinks=SinkFanout([]),
        runner=build_runner_config(settings),
        worker_id="w-keeper",
        lease_s=5,
        job_timeout_s=5,
        max_job_timeout_s=5,
        kill_grace_s=0.5,
        secret_keys=frozenset(),
    )
    daemon = Daemon(
        ctx,
        concurrency=2,
        shutdown_grace_s=1,
        heartbeat_ttl_s=3,
        instance=None,
        metrics_port=0,
        notifier=SystemdNotifier.from_environ({}),
    )
    daemon._start_slot(0)
    daemon._start_slot(1)
    first = daemon.slots[0]
    assert first is not None
    try:
        await poll(lambda: daemon.heartbeat_info()["slots"] == 2, 5, "two live slots")
        first.cancel()
        await poll(lambda: daemon.slots[0] is not first, 5, "slot 0 restarted")
        await poll(lambda: daemon.live_slots == 2, 5, "two live slots again")
        assert "slot 0 ended unexpectedly" in caplog.text
    finally:
        # Stopping ends every slot at its next wait, as at a daemon's shutdown.
        daemon.stopping.set()
        live = [t for t in daemon.slots if t is not None]
        await asyncio.wait_for(asyncio.gather(*live, return_exceptions=True), 10)
        await client.aclose()


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """`directory` immutable (chattr +i) for a while: nothing can be made in it, not even
    by root, as on a full disk. The daemon's checks of its jobs root cannot repair that."""
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(directory)]).returncode != 0:
        pytest.skip("needs chattr (e2fsprogs), root and a file system with the immutable flag")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_a_job_that_finds_no_room_for_its_directory_spends_no_attempt(start_daemon, q) -> None:
    """Its working directory could not be made (the disk full, perhaps filled by another
    tenant's job): the host's fault, not the job's. It goes back to the queue with its
    attempt unspent while spawns pause, and runs once there is room again."""
    d = start_daemon()
    q.enqueue(job("first"))  # the daemon has settled where job directories go
    wait_until(lambda: q.get("first").state.value == "completed", 30, "first completed")
    jobs_root = d.jobs_root()
    jobs_root.rmdir()  # that place is gone, and nothing can be made where it was
    with unwritable(jobs_root.parent):
        q.enqueue(job("roomless", max_attempts=3))
        wait_until(lambda: "cannot create a working directory" in d.log(), 20, "a start tried")
        rec = q.get("roomless")
        assert rec is not None and rec.state.value in ("waiting", "delayed", "active"), rec
    # Room again: the daemon makes its directory again.
    wait_until(lambda: q.get("roomless").state.value == "completed", 60, "completed")
    assert q.get("roomless").attempt == 1


def test_a_host_that_stays_without_room_fails_the_job_in_the_end(
    start_daemon, q, run_log: Path
) -> None:
    """A few free returns to the queue, then the start failures count as attempts again:
    a host that stays broken (a full disk, a missing directory) does not cycle a job for
    ever, and the job ends failed with the reason."""
    # Idle slots, woken by each release; and jobs started before, ending meanwhile.
    d = start_daemon(INGEST_CONCURRENCY="5")
    q.enqueue(job("first"))
    wait_until(lambda: q.get("first").state.value == "completed", 30, "first completed")
    running = [f"running-{i}" for i in range(3)]
    q.enqueue_many([job(r, sleep=0.6 + 0.4 * i) for i, r in enumerate(running)])

    # Their children started: their directories are made (a claimed job whose directory
    # is still to be made would make the jobs root again before it is moved).
    def started() -> bool:
        return {r["job_id"] for r in read_runs(run_log)} >= set(running)

    wait_until(started, 30, "three running")
    jobs_root = d.jobs_root()
    jobs_root.rename(jobs_root.with_name("job-dirs-away"))  # the running jobs' go along
    with unwritable(jobs_root.parent):  # and nothing can be made where it was
        q.enqueue(job("never-room", max_attempts=1))
        wait_until(lambda: q.get("never-room").state.value == "failed", 60, "failed in the end")
    rec = q.get("never-room")
    assert rec.attempt == 1 and "cannot create a working directory" in (rec.error or "")
    assert d.log().count("cannot create a working directory") >= 3  # two free, one spent
    # Each free return waited out a pause of every slot (0.5 s, then 1 s): neither an idle
    # slot nor a job that ended meanwhile let it be taken straight back.
    assert rec.finished_at - rec.enqueued_at >= 1.2, rec
