"""A caller's request to stop one child, with the reason to report (first reason wins)."""

from __future__ import annotations

from collections.abc import Callable

from supervisor.runner.outcome import EndReason


class StopRequest:
    """Created by the caller; `request()` may be called from the event loop at any time."""

    def __init__(self) -> None:
        self._reason: EndReason | None = None
        self._callbacks: list[Callable[[], None]] = []

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
        for callback in self._callbacks:
            callback()
        self._callbacks.clear()
        return True

    def on_request(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when a stop is requested (at once if it already was).

        Returns a function that unsubscribes it. A callback, not an awaitable: awaiting
        one would cost the runner a task per child.
        """
        if self._reason is not None:
            callback()
            return lambda: None
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe
