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
        gate.record(failed, "t1")
        delays.append(gate.remaining_s)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert gate.tenant_remaining_s("t1") == 0  # nothing of the tenant's doing
    ok = replace(failed, ended=EndReason.EXITED, exit_code=0, error=None)
    gate.record(ok, "t2")
    assert gate.remaining_s == 0 and gate.failures == 0


async def test_fast_nonzero_exit_counts_but_bad_input_and_slow_failures_do_not(
    run: RunFn,
) -> None:
    gate = StartFailureGate(fast_fail_s=0.1)
    crashed = await run(fast_config(("/bin/false",)))
    assert crashed.ended is EndReason.EXITED and crashed.exit_code == 1
    assert not gate.is_start_failure(crashed)
    assert gate.is_fast_crash(replace(crashed, wall_s=0.01))
    assert not gate.is_fast_crash(replace(crashed, wall_s=5.0))
    assert not gate.is_fast_crash(replace(crashed, wall_s=0.01, exit_code=65))
    assert not gate.is_fast_crash(replace(crashed, wall_s=0.01, exit_code=75))
    assert gate.is_fast_crash(replace(crashed, wall_s=0.01, exit_code=None, signal=11))
    assert not gate.is_fast_crash(replace(crashed, ended=EndReason.TIMEOUT, wall_s=0.01))


async def test_fast_crashes_pause_their_tenant_only(run: RunFn) -> None:
    clock = Clock()
    gate = StartFailureGate(base_s=0.5, cap_s=4.0, fast_fail_s=0.1, clock=clock)
    crashed = replace(await run(fast_config(("/bin/false",))), wall_s=0.01)
    delays = []
    for _ in range(5):
        gate.record(crashed, "noisy")
        delays.append(gate.tenant_remaining_s("noisy"))
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert gate.remaining_s == 0 and gate.tenant_remaining_s("quiet") == 0
    # Another tenant's success changes nothing for "noisy"; its own resets it.
    ok = replace(crashed, exit_code=0, error=None)
    gate.record(ok, "quiet")
    assert gate.tenant_remaining_s("noisy") == 4.0
    clock.now += 4.0
    assert gate.tenant_remaining_s("noisy") == 0
    gate.record(ok, "noisy")
    gate.record(crashed, "noisy")
    assert gate.tenant_remaining_s("noisy") == 0.5  # the streak started again


async def test_the_tenants_remembered_are_bounded(run: RunFn) -> None:
    clock = Clock()
    gate = StartFailureGate(max_tenants=3, clock=clock)
    crashed = replace(await run(fast_config(("/bin/false",))), wall_s=0.01)
    for tenant in ("a", "b", "c", "d"):
        gate.record(crashed, tenant)
    assert gate.tenant_remaining_s("a") == 0  # the oldest went first
    assert all(gate.tenant_remaining_s(t) == 0.5 for t in ("b", "c", "d"))


async def test_wait_blocks_for_the_backoff() -> None:
    gate = StartFailureGate(base_s=0.2)
    failed = ChildOutcome(
        ended=EndReason.START_FAILED,
        exit_code=None,
        signal=None,
        wall_s=0.0,
        cpu_s=0.0,
        peak_rss_bytes=0,
        progress=0.0,
        progress_message=None,
        result=None,
        error="Worker failed to start: x",
    )
    await asyncio.wait_for(gate.wait(), 1)  # open while nothing failed
    gate.record(failed, "t1")
    started = time.monotonic()
    await asyncio.wait_for(gate.wait(), 5)
    assert time.monotonic() - started >= 0.15
