"""A job's tree sample is bounded: however many processes a job keeps, sampling it never
holds the event loop that every other job's pipes, timers and Redis writes share."""

from __future__ import annotations

import asyncio
import sys
import time

from supervisor.runner import EndReason, StopRequest
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
WINDOW_S = 5.0


async def test_a_job_of_many_processes_never_holds_the_event_loop(run: RunFn) -> None:
    """Sampled every 50 ms (as fast as the config allows), a tree of 1,500 processes would
    keep the loop busy for most of each second if a sample read every process. Measured
    as the loop thread's CPU over a window while the crowd is up (the wall-clock gaps of a
    loop also count the time a busy machine did not run it)."""
    up = asyncio.Event()
    stop = StopRequest()
    share: list[float] = []

    async def measure() -> None:
        await up.wait()
        wall, cpu = time.monotonic(), time.thread_time()
        await asyncio.sleep(WINDOW_S)  # the window measured, not a wait for something
        share.append((time.thread_time() - cpu) / (time.monotonic() - wall))
        stop.request(EndReason.CANCELLED)

    measuring = asyncio.create_task(measure())
    try:
        # The window starts when the crowd is up, however long a busy machine takes to
        # fork it; the timeout only bounds a crowd that never comes up.
        outcome = await run(
            fast_config((sys.executable, "-S", "-c", IDLE_CROWD, "1500")),
            timeout_s=120.0,
            stop=stop,
            on_progress=lambda _p, _m: up.set(),
        )
    finally:
        if not measuring.done():
            measuring.cancel()
    assert share, f"the crowd never came up: {outcome}"
    assert outcome.ended is EndReason.CANCELLED, outcome
    assert outcome.peak_rss_bytes > 0  # the tree was still measured
    assert share[0] < 0.2, f"the loop spent {share[0]:.0%} of the window on the job's tree"
