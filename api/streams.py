"""Open /events streams per caller, bounded: each stream holds one of the events pool's
Redis connections for as long as it is open, so one tenant (or the callers without a
token) must not be able to hold them all."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

# The owner of every stream opened without a token: no tenant id can be spelt this way.
ANONYMOUS = "(anonymous)"


class StreamSlots:
    """How many streams each owner has open: a tenant at most `per_tenant`, every caller
    without a token together at most `anonymous`. Owner None (the all-tenant token, or
    a deployment with no tokens at all) is not counted."""

    def __init__(self, per_tenant: int, anonymous: int) -> None:
        self.per_tenant = per_tenant
        self.anonymous = anonymous
        self._open: dict[str, int] = {}

    def limit(self, owner: str) -> int:
        return self.anonymous if owner == ANONYMOUS else self.per_tenant

    def full(self, owner: str | None) -> bool:
        return owner is not None and self._open.get(owner, 0) >= self.limit(owner)

    def take(self, owner: str | None) -> bool:
        """One more stream for `owner`, unless it already has its limit open."""
        if owner is None:
            return True
        if self.full(owner):
            return False
        self._open[owner] = self._open.get(owner, 0) + 1
        return True

    def give_back(self, owner: str | None) -> None:
        if owner is None:
            return
        held = self._open.pop(owner, 0) - 1
        if held > 0:
            self._open[owner] = held


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
