"""Waiting on a condition with a deadline (never a fixed sleep), for sync and async tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout_s: float,
    what: str,
    interval: float = 0.05,
    backoff: float = 1.0,
) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline.

    `backoff` > 1 stretches the pause after each miss (up to 0.5 s), for costly conditions.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * backoff, max(interval, 0.5))


async def poll(condition: Callable[[], bool], within_s: float, what: str) -> None:
    """The async form: poll without blocking the event loop."""
    deadline = time.monotonic() + within_s
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.02)


async def until(
    check: Callable[[], Awaitable[object]], within_s: float = 15.0, what: str = "the condition"
) -> None:
    """The form for conditions that are themselves async (a store or Redis read)."""
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(0.02)
