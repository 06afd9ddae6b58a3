"""A caller's request to stop one child, with the reason to report (first reason wins)."""

from __future__ import annotations

import asyncio

from supervisor.runner.outcome import EndReason


class StopRequest:
    """Created by the caller; `request()` may be called from the event loop at any time."""

    def __init__(self) -> None:
        self._reason: EndReason | None = None
        self._event = asyncio.Event()

    @property
    def reason(self) -> EndReason | None:
        return self._reason

    @property
    def requested(self) -> bool:
        return self._reason is not None

    def request(self, reason: EndReason) -> bool:
        """Ask for the child to be stopped; False when another reason came first."""
        if self._reason is not None:
            return False
        self._reason = reason
        self._event.set()
        return True

    async def wait(self) -> EndReason:
        await self._event.wait()
        assert self._reason is not None
        return self._reason
