"""Start-failure backoff, driven with real outcomes and a controllable clock."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from supervisor.runner import ChildOutcome, EndReason, StartFailureGate
from tests.runner.conftest import RunFn, fast_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _start_failed(run: RunFn) -> ChildOutcome:
    return await run(fast_config(("/nonexistent/interpreter",)))


async def test_repeated_start_failures_back_off_exponentially_then_reset(run: RunFn) -> None:
    clock = Clock()
    gate = StartFailureGate(base_s=0.5, cap_s=4.0, clock=clock)
    failed = await _start_failed(run)
    delays = []
    for _ in range(6):
        gate.record(failed)
        delays.append(gate.remaining_s)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    ok = replace(failed, ended=EndReason.EXITED, exit_code=0, error=None)
    gate.record(ok)
    assert gate.remaining_s == 0 and gate.failures == 0


async def test_fast_nonzero_exit_counts_but_bad_input_and_slow_failures_do_not(
    run: RunFn,
) -> None:
    gate = StartFailureGate(fast_fail_s=0.1)
    crashed = await run(fast_config(("/bin/false",)))
    assert crashed.ended is EndReason.EXITED and crashed.exit_code == 1
    assert gate.is_start_failure(replace(crashed, wall_s=0.01))
    assert not gate.is_start_failure(replace(crashed, wall_s=5.0))
    assert not gate.is_start_failure(replace(crashed, wall_s=0.01, exit_code=65))
    assert not gate.is_start_failure(replace(crashed, wall_s=0.01, exit_code=75))
    assert gate.is_start_failure(replace(crashed, wall_s=0.01, exit_code=None, signal=11))
    assert not gate.is_start_failure(replace(crashed, ended=EndReason.TIMEOUT, wall_s=0.01))


async def test_wait_blocks_for_the_backoff() -> None:
    gate = StartFailureGate(base_s=0.2)
    failed = ChildOutcome(
        ended=EndReason.START_FAILED, exit_code=None, signal=None, wall_s=0.0, cpu_s=0.0,
        peak_rss_bytes=0, progress=0.0, progress_message=None, result=None,
        error="Worker failed to start: x",
    )
    await asyncio.wait_for(gate.wait(), 1)  # open while nothing failed
    gate.record(failed)
    started = time.monotonic()
    await asyncio.wait_for(gate.wait(), 5)
    assert time.monotonic() - started >= 0.15
