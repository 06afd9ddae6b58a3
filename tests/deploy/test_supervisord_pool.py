"""The shipped supervisord.conf, run by Debian's supervisord with a pool of 3 daemons
against the local Redis: every instance works, a stop drains and releases, a start finishes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from supervisor.queue.jobqueue import JobQueue, JobRecord
from supervisor.queue.keys import QueueKeys
from supervisor.queue.states import JobState

from .pool import (
    SUPERVISORD,
    Pool,
    children_of_test,
    run_queue,
    wait_for_value,
    wait_until,
)

NUMPROCS = 3
JOBS = 6  # INGEST_CONCURRENCY=2 per daemon: every slot of every daemon busy
PROGRAMS = [f"ingest-supervisor:ingest-supervisor_{i:02d}" for i in range(1, NUMPROCS + 1)]

pytestmark = pytest.mark.skipif(
    not os.access(SUPERVISORD, os.X_OK), reason="Debian's supervisord is not installed"
)


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    from tests.conftest import REDIS_URL

    queue = f"t-{uuid.uuid4().hex[:12]}"
    root = Path(tempfile.mkdtemp(prefix="sdpool-", dir="/tmp"))  # short: socket path limit
    pool = Pool.create(root, REDIS_URL, queue, NUMPROCS)
    pool.start()
    try:
        yield pool
    finally:
        pool.shutdown()
        # Only processes this test caused: children started for this test's queue.
        for proc in children_of_test(queue):
            proc.kill()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=QueueKeys(queue).pattern, count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        shutil.rmtree(root, ignore_errors=True)


def _heartbeats(pool: Pool) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(pool.env["REDIS_URL"], decode_responses=True)
    try:
        keys = QueueKeys(pool.queue)
        beats = []
        for worker_id in client.zrange(keys.workers, 0, -1):
            body = client.get(keys.worker(str(worker_id)))
            if body is not None:
                beats.append(json.loads(body))
        return beats
    finally:
        client.close()


def _jobs(pool: Pool, ids: list[str]) -> list[JobRecord]:
    async def get_all(q: JobQueue) -> list[JobRecord]:
        found = [await q.get(job_id) for job_id in ids]
        assert all(r is not None for r in found)
        return [r for r in found if r is not None]

    return run_queue(pool.env["REDIS_URL"], pool.queue, get_all)


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def _running(pool: Pool) -> bool:
    states = pool.states()
    for program in PROGRAMS:
        # A daemon that keeps dying goes BACKOFF then FATAL: say why at once.
        if states.get(program) in ("BACKOFF", "FATAL", "EXITED"):
            name = program.split(":")[1]
            raise AssertionError(f"{program} {states[program]}:\n{pool.program_log(name)}")
    return all(states.get(p) == "RUNNING" for p in PROGRAMS)


def test_pool_of_three_works_drains_on_stop_and_finishes_after_start(pool: Pool) -> None:
    wait_until(lambda: _running(pool), 60, f"{PROGRAMS} RUNNING: {pool.ctl('status')}")

    # Every instance announces itself, numbered 1..3 as supervisord's process number.
    beats = wait_for_value(
        lambda: _heartbeats(pool),
        lambda b: len(b) == NUMPROCS,
        30,
        "three heartbeats",
    )
    assert sorted(b["instance"] for b in beats) == [1, 2, 3]
    assert len({b["pid"] for b in beats}) == NUMPROCS
    for instance in (1, 2, 3):
        assert "# HELP" in _metrics(pool.metrics_base + instance)

    ids = [f"deploy-{i}" for i in range(JOBS)]
    payloads = [
        {
            "job_id": job_id,
            "tenant_id": "deploy-test",
            "data_source": {"type": "text", "text": "hello"},
            "metadata": {"first_run_s": 120, "rerun_s": 0.3},
        }
        for job_id in ids
    ]
    run_queue(pool.env["REDIS_URL"], pool.queue, lambda q: q.enqueue_many(payloads))

    # All three daemons take work: six long jobs fill the six slots, two per daemon.
    wait_until(
        lambda: all(j.state == JobState.ACTIVE and j.progress > 0 for j in _jobs(pool, ids)),
        60,
        "every job running and reporting progress",
    )
    busy = wait_for_value(
        lambda: _heartbeats(pool),
        lambda b: len(b) == NUMPROCS and all(len(x["active"]) == 2 for x in b),
        30,
        "two active jobs in each heartbeat",
    )
    assert sorted(j for b in busy for j in b["active"]) == sorted(ids)
    assert len(children_of_test(pool.queue)) == JOBS
    daemon_pids = [b["pid"] for b in busy]

    # Stop in the middle of the jobs: each daemon drains (grace 1 s), stops its children and
    # releases their jobs; supervisord never has to kill anything.
    pool.ctl("stop", "ingest-supervisor:*")
    wait_until(
        lambda: all(s == "STOPPED" for p, s in pool.states().items() if p in PROGRAMS),
        60,
        "the pool STOPPED",
    )
    statuses = wait_for_value(
        pool.stop_exit_statuses,
        lambda s: len(s) >= NUMPROCS,
        10,
        "supervisord logging every stop",
    )
    assert {name: statuses[name.split(":")[1]] for name in PROGRAMS} == {
        name: "exit status 0" for name in PROGRAMS
    }, pool.supervisord_log()
    assert not any(psutil.pid_exists(pid) for pid in daemon_pids)
    assert children_of_test(pool.queue) == []
    released = _jobs(pool, ids)
    assert [(j.state, j.attempt) for j in released] == [(JobState.WAITING, 0)] * JOBS
    assert _heartbeats(pool) == []

    # Start again: the released jobs run once more and finish, on their first attempt.
    pool.ctl("start", "ingest-supervisor:*")
    wait_until(
        lambda: all(j.state == JobState.COMPLETED for j in _jobs(pool, ids)),
        60,
        "every released job completed",
    )
    done = _jobs(pool, ids)
    assert [j.attempt for j in done] == [1] * JOBS
    for job_id in ids:
        runs = (pool.root / "children" / f"{job_id}.started").read_text().split()
        assert len(runs) == 2, f"{job_id} ran {len(runs)} times"


def test_api_program_reports_the_pool_in_queue_health(pool: Pool) -> None:
    # Independent of the test above: (re)start the pool whatever state it left.
    pool.ctl("start", "ingest-supervisor:*")
    wait_until(lambda: _running(pool), 60, "the pool RUNNING")
    wait_until(
        lambda: pool.states().get("ingest-api") in ("RUNNING", "FATAL", "BACKOFF"),
        60,
        "ingest-api started",
    )
    assert pool.states().get("ingest-api") == "RUNNING", pool.program_log("ingest-api")

    def health() -> tuple[int, dict[str, Any]] | None:
        url = f"http://127.0.0.1:{pool.api_port}/health/queue"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return int(resp.status), json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 503 while a probe fails
            return int(exc.code), json.loads(exc.read())
        except OSError:
            return None  # not listening yet

    # The API, another program of the same file, sees the pool's heartbeats: 3 x 2 slots.
    status, body = wait_for_value(
        health,
        lambda got: got is not None and got[0] == 200,
        60,
        "/health/queue healthy",
    ) or (0, {})
    assert body["healthy"] is True
    assert body["details"]["worker_concurrency"] == NUMPROCS * 2
    assert status == 200
