"""Children get memory and CPU limits by default; the operator can change or drop them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor.queue.states import JobState
from supervisor.settings import DEFAULT_CHILD_CPU_SECONDS, DEFAULT_CHILD_MEMORY_BYTES
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until

LIMITS = Path(__file__).resolve().parent / "children" / "limits.py"
UNLIMITED = -1  # resource.RLIM_INFINITY


def child_limits(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, job_id: str, **env: str
) -> Any:
    daemon = start_daemon(INGEST_WORKER_COMMAND=f"{sys.executable} {LIMITS}", **env)
    daemon.wait_ready()
    q.enqueue(job(job_id))
    wait_until(
        lambda: (rec := q.get(job_id)) is not None and rec.state is JobState.COMPLETED,
        30,
        f"{job_id} completed",
    )
    return q.get(job_id).result


def test_children_are_limited_by_default(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    limits = child_limits(start_daemon, q, "limits-default")
    assert limits["RLIMIT_AS"] == [DEFAULT_CHILD_MEMORY_BYTES] * 2
    assert limits["RLIMIT_CPU"][0] == DEFAULT_CHILD_CPU_SECONDS
    assert DEFAULT_CHILD_MEMORY_BYTES <= 4 * 1024**3 and DEFAULT_CHILD_CPU_SECONDS <= 3600


def test_limits_are_configurable_and_can_be_dropped(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue
) -> None:
    limits = child_limits(
        start_daemon,
        q,
        "limits-set",
        INGEST_CHILD_MEMORY_BYTES=str(3 * 1024**3),
        INGEST_CHILD_CPU_SECONDS="",
    )
    assert limits["RLIMIT_AS"] == [3 * 1024**3] * 2
    assert limits["RLIMIT_CPU"][0] == UNLIMITED
