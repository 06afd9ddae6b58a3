"""A whole reconcile pass by hand (`ingestctl status-sync`): compare every job record in
Redis with its row, re-send the stale, and write them at once as a projector would."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from typing import Any

from supervisor.queue.jobqueue import JobQueue
from supervisor.status.backend import NoneBackend, StatusBackend
from supervisor.status.projector import StatusProjector
from supervisor.status.reconcile import sweep_all


@dataclass(frozen=True)
class SyncReport:
    checked: int
    missing: list[str]
    behind: list[str]
    resent: int
    written: int  # outbox rows this command wrote to the store (others may write some too)
    drained: bool  # the outbox was empty when the command finished

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def status_sync(
    queue: JobQueue, backend: StatusBackend, *, deadline_s: float = 60.0
) -> SyncReport:
    if isinstance(backend, NoneBackend):
        raise ValueError("status-sync needs a status store; INGEST_STATUS_BACKEND is none")
    report = await sweep_all(queue, backend)
    projector = StatusProjector(
        queue.client,
        queue.keys,
        backend,
        consumer=f"ingestctl:{socket.gethostname()}:{os.getpid()}",
    )
    drained = await projector.drain(deadline_s)
    return SyncReport(
        checked=report.checked,
        missing=report.missing,
        behind=report.behind,
        resent=report.resent,
        written=projector.stats.rows,
        drained=drained,
    )
