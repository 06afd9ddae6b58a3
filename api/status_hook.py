"""Writing the `queued` status row for a newly enqueued job, off the response path.

The backend is the one the supervisor's own settings describe (INGEST_STATUS_BACKEND,
SUPABASE_URL, INGEST_STATUS_DSN, ...), so the API and the daemons write the same table. Rows are
written with `supervisor.status.queued_update` (what `write_queued` writes), a batch in one
request. A failed write is logged and dropped: the daemon's writes on claim create the row anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from supervisor.settings import load_settings
from supervisor.status import StatusBackend, open_backend, queued_update

log = logging.getLogger(__name__)
WRITE_TIMEOUT_S = 10.0


class StatusHook:
    def __init__(self, backend_name: str) -> None:
        self.backend_name = backend_name
        self._backend: StatusBackend | None = None

    @property
    def enabled(self) -> bool:
        return self._backend is not None

    async def start(self) -> None:
        if self.backend_name == "none":
            return
        try:
            self._backend = open_backend(load_settings([]))
        except Exception as exc:
            log.warning("status backend not opened (%s); the API writes no queued rows", exc)

    async def write_queued(
        self, jobs: Sequence[tuple[Mapping[str, Any], int]], queued_at: float
    ) -> None:
        """One request for the rows of (payload, max_attempts) pairs; only `job_id` and
        `tenant_id` of a payload are read."""
        if self._backend is None or not jobs:
            return
        updates = [queued_update(p, max_attempts=n, queued_at=queued_at) for p, n in jobs]
        try:
            await asyncio.wait_for(self._backend.apply(updates), WRITE_TIMEOUT_S)
        except Exception as exc:
            log.warning("%d queued status row(s) not written: %s", len(updates), exc.__class__)

    async def aclose(self) -> None:
        if self._backend is None:
            return
        try:
            await asyncio.wait_for(self._backend.aclose(), 5.0)
        except Exception:
            log.exception("status backend did not close cleanly")
