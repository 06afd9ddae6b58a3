"""The producer's side (API, ingestctl enqueue): the `queued` row of a new job."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from supervisor.status.backend import StatusBackend
from supervisor.status.update import StatusUpdate


def queued_update(
    payload: Mapping[str, Any], *, max_attempts: int, queued_at: float
) -> StatusUpdate:
    # seq_run 0: a producer's clock is not the queue's, so this row never outranks a
    # change the daemon makes; it only creates the row (or refreshes an earlier one).
    return StatusUpdate(
        job_id=str(payload["job_id"]),
        tenant_id=str(payload["tenant_id"]),
        status="queued",
        attempt=0,
        seq_run=0.0,
        seq_at=queued_at,
        progress=0.0,
        max_attempts=max_attempts,
        queued_at=queued_at,
    )


async def write_queued(
    backend: StatusBackend, payload: Mapping[str, Any], *, max_attempts: int, queued_at: float
) -> None:
    """Write the queued row now (one request); raises StatusStoreError on failure. Only
    `job_id` and `tenant_id` are read from the payload, so secrets in it go nowhere."""
    await backend.apply([queued_update(payload, max_attempts=max_attempts, queued_at=queued_at)])
