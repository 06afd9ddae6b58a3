"""Writing the `queued` status row for a newly enqueued job, off the response path.

HOOK: `supervisor.status` (another engineer's module) provides
`write_queued(backend, payload, max_attempts=, queued_at=)`; how a backend object is built
from the environment is theirs to define. This adapter looks for a builder named
`open_backend` or `build_backend` taking the supervisor `Settings`; the lead reconciles the
name once that module lands. Until then, or with INGEST_STATUS_BACKEND=none, nothing is
written here and the supervisor's own writes (on claim) fill the row.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from typing import Any

from supervisor.payload import redact

log = logging.getLogger(__name__)
WRITE_TIMEOUT_S = 10.0


class StatusHook:
    def __init__(self, backend_name: str) -> None:
        self.backend_name = backend_name
        self._backend: Any = None
        self._write: Any = None

    @property
    def enabled(self) -> bool:
        return self._write is not None

    async def start(self) -> None:
        if self.backend_name == "none":
            return
        try:
            status = importlib.import_module("supervisor.status")
            write = status.write_queued
            builder = getattr(status, "open_backend", None) or status.build_backend
            from supervisor.settings import load_settings

            backend = builder(load_settings([]))
            if inspect.isawaitable(backend):
                backend = await backend
        except Exception as exc:
            log.warning("status writer unavailable (%s); queued rows not written by the API", exc)
            return
        self._backend, self._write = backend, write

    async def write_queued(
        self, payload: dict[str, Any], max_attempts: int, queued_at: float
    ) -> None:
        """Write one queued row; failures are logged (without the payload) and dropped."""
        if self._write is None:
            return
        try:
            if inspect.iscoroutinefunction(self._write):
                await asyncio.wait_for(
                    self._write(
                        self._backend, payload, max_attempts=max_attempts, queued_at=queued_at
                    ),
                    WRITE_TIMEOUT_S,
                )
            else:
                await asyncio.wait_for(
                    asyncio.to_thread(
                        self._write,
                        self._backend,
                        payload,
                        max_attempts=max_attempts,
                        queued_at=queued_at,
                    ),
                    WRITE_TIMEOUT_S,
                )
        except Exception as exc:
            log.warning(
                "queued status row for %s not written: %s",
                redact(payload).get("job_id"),
                type(exc).__name__,
            )

    async def aclose(self) -> None:
        closer = getattr(self._backend, "aclose", None) or getattr(self._backend, "close", None)
        if closer is None:
            return
        try:
            result = closer()
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, 5.0)
        except Exception:
            log.exception("status backend did not close cleanly")
