"""Start-failure backoff, driven with real outcomes and a controllable clock."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from supervisor.runner import ChildOutcome, EndReason, StartFailureGate
from tests.runner.conftest import RunFn, fast_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _start_failed(run: RunFn) -> ChildOutcome:
    return await run(fast_config(("/nonexistent/interpreter",)))


def pauses(gate: StartFailureGate, clock: Clock, outcome: ChildOutcome, tenant: str) -> float:
    """Record `outcome` of a child started once any pause had ended; the pause it caused."""
    clock.now += gate.remaining_s
    gate.record(outcome, tenant)
    return gate.remaining_s


def ends_normally(gate: StartFailureGate, clock: Clock, ok: ChildOutcome, tenant: str) -> None:
    """Record `ok` of a child started once any pause had ended."""
    clock.now += gate.remaining_s + ok.wall_s
    gate.record(ok, tenant)


async def test_repeated_start_failures_back_off_exponentially_then_reset(run: RunFn) -> None:
    clock = Clock()
    gate = StartFailureGate(base_s=0.5, cap_s=4.0, clock=clock)
    healthy = replace(await run(fast_config(("/bin/true",))), wall_s=1.0)
    gate.seen_ending_normally(["t1", "t2", "t3"])
    failed = await _start_failed(run)
    # Whoever's job it was: nothing could start.
    delays = [pauses(gate, clock, failed, "t1") for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    gate.record(healthy, "t2")  # it ran through the last pause: it proves nothing
    assert gate.remaining_s == 4.0 and gate.failures == 6
    clock.now += gate.remaining_s + healthy.wall_s
    gate.record(healthy, "t2")  # started once the pause was over
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


@pytest.fixture
async def crash_and_ok(run: RunFn) -> tuple[ChildOutcome, ChildOutcome]:
    crashed = replace(await run(fast_config(("/bin/false",))), wall_s=0.01)
    return crashed, replace(crashed, exit_code=0, error=None, wall_s=1.0)


def test_knowing_one_tenant_or_none_any_crash_pauses(
    crash_and_ok: tuple[ChildOutcome, ChildOutcome],
) -> None:
    """A deploy with one tenant, or a queue with no recent completions: the crashes may
    be a broken deploy, and pausing holds back nobody else's work that is known to run."""
    crashed, ok = crash_and_ok
    clock = Clock()
    gate = StartFailureGate(base_s=0.5, cap_s=4.0, clock=clock)
    assert [pauses(gate, clock, crashed, "only") for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    ends_normally(gate, clock, ok, "only")
    assert gate.remaining_s == 0 and gate.failures == 0
    assert pauses(gate, clock, crashed, "only") == 0.5


def test_crashes_must_span_three_tenants_once_three_are_known(
    crash_and_ok: tuple[ChildOutcome, ChildOutcome],
) -> None:
    crashed, ok = crash_and_ok
    clock = Clock()
    gate = StartFailureGate(base_s=0.5, cap_s=4.0, clock=clock)
    gate.seen_ending_normally(["a", "b", "c", "d"])  # as a daemon's start reads them
    # One tenant's flood, with another tenant's crash in the middle of it: their jobs fail.
    for tenant in ["noisy"] * 20 + ["unlucky"] + ["noisy"] * 20:
        assert pauses(gate, clock, crashed, tenant) == 0
    assert gate.failures == 0
    # A third tenant's jobs crash too: that is what a broken deploy looks like.
    assert pauses(gate, clock, crashed, "a") == 0.5
    # Each further pause takes three tenants' crashes again: old ones do not carry over.
    assert [pauses(gate, clock, crashed, t) for t in ("noisy", "unlucky", "b")] == [0, 0, 1.0]
    ends_normally(gate, clock, ok, "b")  # a normal ending ends the run and the pause
    assert gate.remaining_s == 0 and gate.failures == 0


def test_crashes_of_children_started_before_a_pause_do_not_escalate_it(
    crash_and_ok: tuple[ChildOutcome, ChildOutcome],
) -> None:
    """Every slot claims when a pause ends; their crashes land together. One pause for
    them, not one per slot."""
    crashed, _ = crash_and_ok
    clock = Clock()
    gate = StartFailureGate(base_s=0.5, cap_s=30.0, clock=clock)
    for _ in range(8):
        gate.record(crashed, "only")
    assert gate.remaining_s == 0.5 and gate.failures == 1


def test_two_tenants_known_means_two_tenants_crashing_pause(
    crash_and_ok: tuple[ChildOutcome, ChildOutcome],
) -> None:
    crashed, ok = crash_and_ok
    clock = Clock()
    gate = StartFailureGate(base_s=0.5, clock=clock)
    gate.record(ok, "a")
    gate.record(ok, "b")
    assert pauses(gate, clock, crashed, "a") == 0
    assert pauses(gate, clock, crashed, "b") == 0.5


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


def test_jobs_running_through_a_pause_do_not_end_it(
    crash_and_ok: tuple[ChildOutcome, ChildOutcome],
) -> None:
    """Nothing can start (a full disk), but jobs started before keep ending normally:
    those endings say nothing of the trouble, and must not reopen every slot at once."""
    crashed, ok = crash_and_ok
    clock = Clock()
    gate = StartFailureGate(base_s=0.5, cap_s=4.0, clock=clock)
    assert pauses(gate, clock, crashed, "only") == 0.5
    clock.now += 0.1
    gate.record(replace(ok, wall_s=5.0), "other")  # it ran through the pause
    assert gate.remaining_s == pytest.approx(0.4) and gate.failures == 1


async def test_pauses_in_a_row_are_reported_only_while_recent(run: RunFn) -> None:
    """What the heartbeat reports: three pauses in a row keep a supervisor out of the
    capacity /health/queue counts, but once spawns have been open a minute with nothing
    failing (an idle daemon after a deploy was fixed), it counts again."""
    clock = Clock()
    gate = StartFailureGate(base_s=0.5, cap_s=4.0, clock=clock)
    failed = await _start_failed(run)
    for _ in range(3):
        pauses(gate, clock, failed, "t1")
    assert gate.pauses_in_a_row() == 3
    clock.now += gate.remaining_s + 30
    assert gate.pauses_in_a_row() == 3
    clock.now += 31
    assert gate.pauses_in_a_row() == 0
