"""Children that die at once: one tenant's crashes never pause every slot while other
tenants' jobs run normally; what looks like a broken deploy still does."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable

import redis

from supervisor.queue.keys import QueueKeys
from supervisor.queue.states import JobState
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until

# Fails at once, as a parser crashing on a document would, for tenants named "noisy*".
CRASH_FOR_NOISY = shlex.join(
    [
        "/bin/sh",
        "-c",
        "grep -q '\"tenant_id\":\"noisy' && { echo 'parser crashed' >&2; exit 1; }; "
        "echo 'PROGRESS: 100 done'",
    ]
)


def start(start_daemon: Callable[..., DaemonProcess], q: SyncQueue, warm: bool) -> DaemonProcess:
    daemon = start_daemon(INGEST_WORKER_COMMAND=CRASH_FOR_NOISY, INGEST_CONCURRENCY="1")
    daemon.wait_ready()
    if warm:  # two tenants' jobs have run normally on this daemon
        q.enqueue_many([job("warm-a"), {**job("warm-b"), "tenant_id": "tenant-b"}])
        wait_until(
            lambda: all(q.get(j).state is JobState.COMPLETED for j in ("warm-a", "warm-b")),
            10,
            "the warm-up jobs done",
        )
    return daemon


def crashing(ids: list[str], tenants: list[str]) -> list[dict[str, object]]:
    return [
        {**job(job_id, max_attempts=1), "tenant_id": tenant}
        for job_id, tenant in zip(ids, tenants, strict=True)
    ]


def assert_paced(daemon: DaemonProcess, q: SyncQueue, tenants: list[str]) -> None:
    """Jobs of `tenants` that crash at once, run by a one-slot daemon, fail paced: pauses
    of 0.5 s and 1 s (at least) come before the last one starts."""
    ids = [f"crash-{i}" for i in range(len(tenants))]
    enqueued = time.monotonic()
    q.enqueue_many(crashing(ids, tenants))
    wait_until(
        lambda: all(q.get(j).state is JobState.FAILED for j in ids), 20, "every crash failed"
    )
    assert time.monotonic() - enqueued >= 1.5
    assert "pausing spawns" in daemon.log()


def test_one_tenants_crashing_jobs_do_not_hold_back_another_tenant(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    daemon = start(start_daemon, q, warm=True)
    noisy = [f"noisy-{i}" for i in range(6)]
    q.enqueue_many(crashing(noisy, ["noisy"] * 6))
    q.enqueue(job("quiet"))
    try:
        wait_until(lambda: q.get("quiet").state is JobState.COMPLETED, 5, "the quiet job done")
    except AssertionError as exc:
        raise AssertionError(daemon.log()[-2000:]) from exc
    for job_id in noisy:
        rec = q.get(job_id)
        assert rec.state is JobState.FAILED and "parser crashed" in (rec.error or "")
    assert "pausing spawns" not in daemon.log()


def test_a_fresh_daemon_whose_children_all_crash_pauses_every_slot(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    """A deploy that broke, seen by a daemon that has run nothing else: the crashes are
    paced (0.5 s, then 1 s), not burnt through."""
    daemon = start(start_daemon, q, warm=False)
    assert_paced(daemon, q, ["noisy"] * 3)


def test_crashes_of_different_tenants_back_to_back_pause_every_slot(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    """Other tenants did fine before, but now every tenant's children die: a deploy."""
    daemon = start(start_daemon, q, warm=True)
    # Two tenants known: every second crash (the other tenant's) pauses, 0.5 s then 1 s.
    assert_paced(daemon, q, ["noisy-x", "noisy-y"] * 3)


def test_a_daemon_that_just_started_knows_the_tenants_of_recent_completions(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    """A tenant's high-priority crashing batch at the head of the queue when a daemon
    starts (a deploy, a restart): the daemon has run nothing yet, but the queue remembers
    which tenants' jobs it completed last, one entry each, so the batch's crashes are that
    tenant's (however many jobs that tenant completed since the others)."""
    done = [("tenant-a", 1), ("tenant-b", 1), ("tenant-c", 1), ("noisy", 101)]
    for tenant, count in done:
        for i in range(count):
            q.enqueue({**job(f"done-{tenant}-{i}"), "tenant_id": tenant})
            claim = q.claim("earlier-worker", lease_s=30, timeout_s=5)
            assert claim is not None and q.complete(claim.job.job_id, claim.token, {"ok": 1})
    noisy = [f"noisy-{i}" for i in range(6)]
    q.enqueue_many([{**payload, "priority": "high"} for payload in crashing(noisy, ["noisy"] * 6)])
    q.enqueue(job("quiet"))
    daemon = start(start_daemon, q, warm=False)
    try:
        wait_until(lambda: q.get("quiet").state is JobState.COMPLETED, 5, "the quiet job done")
    except AssertionError as exc:
        raise AssertionError(daemon.log()[-2000:]) from exc
    assert all(q.get(j).state is JobState.FAILED for j in noisy)
    assert "pausing spawns" not in daemon.log()


def test_an_unreadable_memory_of_tenants_does_not_stop_a_daemon(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, raw_redis: redis.Redis
) -> None:
    raw_redis.set(QueueKeys(q.queue).completed_tenants, "not a sorted set")
    daemon = start(start_daemon, q, warm=False)
    assert "recent tenants not read" in daemon.log()
    q.enqueue(job("runs"))
    wait_until(lambda: q.get("runs").state is JobState.COMPLETED, 10, "a job done")
