"""A job's tree sample is bounded: however many processes a job keeps, sampling it never
holds the event loop that every other job's pipes, timers and Redis writes share."""

from __future__ import annotations

import asyncio
import sys
import time

from supervisor.runner import EndReason
from tests.runner.conftest import RunFn, fast_config

# Forks argv[1] idle children in its own group (no escape, no limit broken), says so, and
# waits: the job's timeout ends it.
IDLE_CROWD = """
import os, sys, time
for _ in range(int(sys.argv[1])):
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
print("PROGRESS: 50 up", flush=True)
time.sleep(600)
"""


async def test_a_job_of_many_processes_never_holds_the_event_loop(run: RunFn) -> None:
    """Sampled every 50 ms (as fast as the config allows), a tree of 1,500 processes would
    keep the loop busy for most of each second if a sample read every process."""
    up = asyncio.Event()
    gaps: list[float] = []

    async def ticker() -> None:
        await up.wait()
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    try:
        outcome = await run(
            fast_config((sys.executable, "-S", "-c", IDLE_CROWD, "1500")),
            timeout_s=8.0,
            on_progress=lambda _p, _m: up.set(),
        )
    finally:
        ticking.cancel()
    assert outcome.ended is EndReason.TIMEOUT, outcome
    assert up.is_set() and len(gaps) > 50
    assert outcome.peak_rss_bytes > 0  # the tree was still measured
    # One sample of the process table may hold the loop a moment on a busy machine; what
    # must not happen is samples one after another holding it most of the time.
    held = sum(g - 0.01 for g in gaps if g > 0.05)
    span = sum(gaps)
    assert held < 0.15 * span, f"the loop was held {held:.2f} s of {span:.2f} s"
