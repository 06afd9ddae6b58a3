"""Sampling a running child's process tree on a timer, at a cost the event loop can bear."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from supervisor.runner.containment import SAMPLE_COST_FACTOR, ProcessTree


def start_sampling(
    tree: ProcessTree, exited: asyncio.Future[Any], interval: float
) -> Callable[[], None]:
    """Sample `tree` every `interval` until `exited` is done, or less often when a sample
    costs more (SAMPLE_COST_FACTOR); returns the stopper.

    A timer chain rather than a task: most children end before the first sample.
    """
    loop = asyncio.get_running_loop()
    pending: list[asyncio.TimerHandle] = []

    def tick() -> None:
        pending.clear()
        if exited.done():
            return
        began = time.thread_time()  # CPU: a daemon starved by its children is not slower
        try:
            tree.sample()
        finally:  # one failed sample must not end the sampling
            cost = time.thread_time() - began
            delay = min(max(interval, cost * SAMPLE_COST_FACTOR), interval * SAMPLE_COST_FACTOR)
            pending.append(loop.call_later(delay, tick))

    def stop() -> None:
        for handle in pending:
            handle.cancel()
        pending.clear()

    pending.append(loop.call_later(interval, tick))
    return stop
