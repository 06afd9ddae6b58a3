"""Open /events streams per tenant-scoped caller, bounded: each stream holds one of the
events pool's Redis connections for as long as it is open, so one tenant must not be able
to hold them all."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class StreamSlots:
    """How many streams each owner (a tenant, or every anonymous reader together) has
    open, at most `per_tenant` at once. Owner None (the all-tenant token) is not counted."""

    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._open: dict[str, int] = {}

    def full(self, tenant: str | None) -> bool:
        return tenant is not None and self._open.get(tenant, 0) >= self.per_tenant

    def take(self, tenant: str | None) -> bool:
        """One more stream for `tenant`, unless it already has `per_tenant` open."""
        if tenant is None:
            return True
        if self.full(tenant):
            return False
        self._open[tenant] = self._open.get(tenant, 0) + 1
        return True

    def give_back(self, tenant: str | None) -> None:
        if tenant is None:
            return
        held = self._open.pop(tenant, 0) - 1
        if held > 0:
            self._open[tenant] = held


class HeldStream(StreamingResponse):
    """A streaming response that calls `on_end` once it ends, however it ends (finished,
    the client gone, cancelled)."""

    def __init__(
        self, content: AsyncIterable[bytes], *, on_end: Callable[[], None], **kw: Any
    ) -> None:
        super().__init__(content, **kw)
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_end()
