"""Stopping asyncio tasks without trusting cancellation to be honoured.

On Python 3.11 a cancel can be lost: `asyncio.wait_for` swallows it when the inner awaitable
finishes at the same moment (fixed in 3.12), and a library may turn it into its own error.
A task that lost its cancel keeps running, so `task.cancel(); await task` can hang a slot
or a shutdown forever. Loops therefore also stop on their own flags, and every join here is
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)


async def join_bounded(task: asyncio.Task[Any], timeout_s: float) -> None:
    """Wait up to `timeout_s` for a task told to stop, then cancel it; never hang."""
    if not task.done():
        await asyncio.wait({task}, timeout=timeout_s)
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.done():
        log.warning("task %s ignored its cancel; leaving it behind", task.get_name())
    elif not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile (upkeep loops' pause)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


async def wait_all(futures: list[asyncio.Future[Any]], timeout_s: float) -> None:
    """Until every one of `futures` is done, or `timeout_s` has passed."""
    pending = [f for f in futures if not f.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)


async def first_of(*aws: Awaitable[Any]) -> None:
    """Wait until the first awaitable finishes; cancel the rest, re-raise its error."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
    # A cancelled Redis call may not end at once (or may swallow the cancel and finish its
    # blocking wait); it holds nothing we need, so it is never awaited without a bound.
    await asyncio.wait(tasks, timeout=1.0)
    for t in tasks:
        if t not in done:
            # What a cancelled wait ends with (often the connection closed under it at
            # shutdown) is of no interest: retrieved so it is not logged as lost.
            t.add_done_callback(_discard_outcome)
    for t in done:
        exc = t.exception()
        if exc is not None:
            raise exc


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
