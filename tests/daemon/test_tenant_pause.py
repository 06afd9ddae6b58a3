"""Children that fail at once pause their own tenant's jobs, never every slot.

A child that dies within milliseconds looks the same whether the deploy is broken or one
tenant's document crashes the parser. The pause it earns holds back that tenant's jobs
(claimed ones go back to the queue without spending an attempt); another tenant's job runs
at once.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable

from supervisor.queue.states import JobState
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until

# Fails at once, as a parser crashing on a document would, for the tenant named "noisy".
CRASH_FOR_NOISY = shlex.join(
    [
        "/bin/sh",
        "-c",
        "grep -q '\"tenant_id\":\"noisy\"' && { echo 'parser crashed' >&2; exit 1; }; "
        "echo 'PROGRESS: 100 done'",
    ]
)


def test_one_tenants_crashing_jobs_do_not_hold_back_another_tenant(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    daemon = start_daemon(INGEST_WORKER_COMMAND=CRASH_FOR_NOISY, INGEST_CONCURRENCY="1")
    daemon.wait_ready()
    noisy = [f"noisy-{i}" for i in range(6)]
    q.enqueue_many([{**job(job_id, max_attempts=1), "tenant_id": "noisy"} for job_id in noisy])
    q.enqueue(job("quiet"))
    try:
        wait_until(lambda: q.get("quiet").state is JobState.COMPLETED, 10, "the quiet job done")
    except AssertionError as exc:
        raise AssertionError(daemon.log()[-2000:]) from exc
    records = [q.get(job_id) for job_id in noisy]
    failed = [r for r in records if r.state is JobState.FAILED]
    assert failed and all("parser crashed" in (r.error or "") for r in failed)
    # The ones held back spent no attempt: each still has its one try.
    held = [r for r in records if r.state is not JobState.FAILED]
    assert held and all(r.attempt == 0 for r in held), [(r.state, r.attempt) for r in held]
    assert "pausing spawns" not in daemon.log()


def test_a_tenants_jobs_that_keep_crashing_are_paused_longer_each_time(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    """A broken deploy with one tenant: its jobs still fail, but paced, not burnt through."""
    daemon = start_daemon(INGEST_WORKER_COMMAND=CRASH_FOR_NOISY, INGEST_CONCURRENCY="1")
    daemon.wait_ready()
    ids = [f"crash-{i}" for i in range(3)]
    enqueued = time.monotonic()
    q.enqueue_many([{**job(job_id, max_attempts=1), "tenant_id": "noisy"} for job_id in ids])
    wait_until(
        lambda: all(q.get(j).state is JobState.FAILED for j in ids), 20, "every crash failed"
    )
    # After the first crash a pause of 0.5 s, after the second 1 s: never all at once.
    assert time.monotonic() - enqueued >= 1.5
    assert all(q.get(j).attempt == 1 for j in ids)
    assert "tenant noisy" in daemon.log()
