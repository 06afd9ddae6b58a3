"""Both start modes (compiled exec shim, preexec_fn fallback) set the child up the same way."""

from __future__ import annotations

import resource
import signal
from collections.abc import Iterator

import pytest

from supervisor.runner import EndReason, ExecSpawner, ResourceLimits
from supervisor.runner.shim import build_shim
from tests.runner.conftest import RunFn, child_cmd, fast_config, wait_gone

MODES = {"shim": ExecSpawner(), "preexec": ExecSpawner(shim=None)}


@pytest.fixture(params=sorted(MODES))
def spawner(request: pytest.FixtureRequest) -> ExecSpawner:
    return MODES[request.param]


@pytest.fixture
def parent_masks_and_ignores_signals() -> Iterator[None]:
    """The supervisor blocks SIGUSR1 and ignores SIGHUP (as under nohup)."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGHUP, old_hup)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def test_shim_is_built() -> None:
    assert MODES["shim"].shim_path is not None, "a C compiler is installed here"
    assert build_shim() == MODES["shim"].shim_path


@pytest.mark.usefixtures("parent_masks_and_ignores_signals")
async def test_child_gets_clean_signals_limits_and_own_session(
    run: RunFn, spawner: ExecSpawner
) -> None:
    limits = ResourceLimits(memory_bytes=512 * 1024 * 1024, open_files=123)
    cfg = fast_config(child_cmd("report_setup.py"), spawner=spawner, limits=limits)
    outcome = await run(cfg)
    assert outcome.succeeded, outcome.error
    got = outcome.result
    assert got["sig_blocked"] == 0
    assert not got["sig_ignored"] & (1 << (signal.SIGHUP - 1))
    assert got["core"] == [0, 0]
    assert got["nofile"] == [123, 123]
    assert got["as"] == [512 * 1024 * 1024] * 2
    assert got["sid_is_pid"] and got["pgid_is_pid"]
    assert resource.getrlimit(resource.RLIMIT_NOFILE) != (123, 123)  # the supervisor's own


async def test_escaped_grandchild_killed_in_both_modes(run: RunFn, spawner: ExecSpawner) -> None:
    cfg = fast_config(child_cmd("grandchild_setsid.py", "stay"), spawner=spawner)
    outcome = await run(cfg, timeout_s=0.5)
    assert outcome.ended is EndReason.TIMEOUT
    assert not wait_gone([int((outcome.progress_message or "").split()[-1])])


async def test_program_that_cannot_be_executed_is_a_start_failure(
    run: RunFn, spawner: ExecSpawner, tmp_path: object
) -> None:
    from pathlib import Path

    bogus = Path(str(tmp_path)) / "not-a-program"
    bogus.write_bytes(b"\x00\x01\x02 not an executable format")
    bogus.chmod(0o755)
    outcome = await run(fast_config((str(bogus),), spawner=spawner))
    assert outcome.ended is EndReason.START_FAILED, outcome
    assert outcome.error is not None and outcome.error.startswith("Worker failed to start: ")
    missing = await run(fast_config(("no-such-program-anywhere",), spawner=spawner))
    assert missing.ended is EndReason.START_FAILED
