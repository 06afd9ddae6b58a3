"""How the daemon treats Redis errors: which are transient, and how long to keep trying."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import (
    BusyLoadingError,
    ConnectionError,
    ReadOnlyError,
    TimeoutError,
    TryAgainError,
)
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


def why(exc: BaseException) -> str:
    """An error for a log line: its text, or its kind when it has none (a timeout)."""
    return str(exc) or type(exc).__name__


TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    BusyLoadingError,
    TryAgainError,
    # READONLY: a replica, or an old master after a failover; writes go through again once
    # the address leads to the new master.
    ReadOnlyError,
    asyncio.TimeoutError,
    OSError,
)


async def call_until(
    deadline: float | Callable[[], float],
    make_call: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempt_timeout_s: float = 5.0,
) -> T:
    """Retry a Redis call on transient errors until the monotonic `deadline`, then re-raise.
    A callable deadline is asked again before every attempt (one that moves closer while
    the call retries, such as a daemon's stop)."""

    def until() -> float:
        return deadline() if callable(deadline) else deadline

    async def one() -> T:
        left = max(0.05, until() - time.monotonic())
        async with asyncio.timeout(min(attempt_timeout_s, left)):
            return await make_call()

    # The common case is one call that succeeds: make it without building a retry loop.
    try:
        return await one()
    except TRANSIENT as exc:
        if time.monotonic() >= until():
            raise
        log.warning("%s failed (%s); retrying", what, why(exc))
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT),
        # 0.1 s doubling to 1.5 s, plus up to 0.5 s of jitter (spelled the same way in every
        # tenacity release this package allows).
        wait=wait_exponential(multiplier=0.1, max=1.5) + wait_random(0, 0.5),
        stop=lambda _state: time.monotonic() >= until(),
        reraise=True,
        before_sleep=lambda state: log.warning(
            "%s failed (%s); retrying", what, _outcome_error(state)
        ),
    )
    async for attempt in retrying:
        with attempt:
            return await one()
    raise AssertionError("unreachable")  # pragma: no cover


def _outcome_error(state: RetryCallState) -> str:
    error = state.outcome.exception() if state.outcome is not None else None
    return why(error) if error is not None else "?"
