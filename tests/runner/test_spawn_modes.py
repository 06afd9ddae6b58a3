"""Every start mode sets the child up the same way: the compiled exec shim (libc-free on
x86-64), the portable libc shim, and the preexec_fn fallback."""

from __future__ import annotations

import os
import platform
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.runner import EndReason, ExecSpawner, ResourceLimits
from supervisor.runner.shim import build_shim
from tests.runner.conftest import RunFn, child_cmd, fast_config, wait_gone

MODES = {
    "shim": ExecSpawner(),
    "shim-libc": ExecSpawner(shim=build_shim(portable=True)),
    "preexec": ExecSpawner(shim=None),
}


@pytest.fixture(params=sorted(MODES))
def spawner(request: pytest.FixtureRequest) -> ExecSpawner:
    return MODES[request.param]


@pytest.fixture
def parent_masks_and_ignores_signals() -> Iterator[None]:
    """The supervisor blocks SIGUSR1 and ignores SIGHUP (as under nohup), and holds an
    inheritable fd (as a C library or the supervisor's own parent might leave one)."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    leak = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(leak, True)
    yield
    os.close(leak)
    signal.signal(signal.SIGHUP, old_hup)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def test_shim_is_built() -> None:
    assert MODES["shim"].shim_path is not None, "a C compiler is installed here"
    assert MODES["shim-libc"].shim_path is not None
    assert build_shim() == MODES["shim"].shim_path
    if platform.machine() == "x86_64":  # the libc-free build, not a silent fallback
        assert os.path.getsize(MODES["shim"].shim_path) < 64 * 1024
        assert os.path.getsize(MODES["shim-libc"].shim_path) > 64 * 1024


def test_shim_reports_why_it_could_not_exec(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-program"
    bogus.write_bytes(b"\x00\x01\x02 not an executable format")
    bogus.chmod(0o755)
    for mode in ("shim", "shim-libc"):
        shim = MODES[mode].shim_path
        assert shim is not None
        done = subprocess.run(
            [shim, str(os.getpid()), "-", "-", "--", str(bogus), "x"],
            capture_output=True,
            check=False,
        )
        assert done.returncode == 127
        assert done.stderr == f"ingest-shim: exec {bogus}: Exec format error\n".encode(), mode
        bad_limit = subprocess.run(
            [shim, str(os.getpid()), "4=0:0,7=x:1,8=1:1", "-", "--", "/bin/true", "true"],
            capture_output=True,
            check=False,
        )
        assert bad_limit.returncode == 127
        assert bad_limit.stderr == b"ingest-shim: limit 7=x:1: Invalid argument\n", mode
        too_long = subprocess.run(
            [shim, str(os.getpid()), "-", "-", "--", "/" + "a" * 5000, "x"], capture_output=True
        )
        assert too_long.stderr.endswith(b": File name too long\n"), mode
        no_dir = subprocess.run(
            [shim, str(os.getpid()), "-", "/no/such/dir", "--", "/bin/true", "true"],
            capture_output=True,
        )
        assert no_dir.stderr == b"ingest-shim: chdir /no/such/dir: No such file or directory\n"


def test_shim_refuses_to_start_a_child_for_a_dead_parent() -> None:
    """The parent pid on its command line is not its parent: the supervisor already died."""
    for mode in ("shim", "shim-libc"):
        shim = MODES[mode].shim_path
        assert shim is not None
        done = subprocess.run([shim, "1", "-", "-", "--", "/bin/echo", "echo", "ran"], check=False,
                              capture_output=True)
        assert done.returncode == 127 and b"ran" not in done.stdout, mode


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
    assert got["fds"] == [0, 1, 2]  # the supervisor's inheritable fd 'leak' did not reach it
    assert resource.getrlimit(resource.RLIMIT_NOFILE) != (123, 123)  # the supervisor's own


async def test_unlimited_is_a_limit_every_mode_applies(run: RunFn, spawner: ExecSpawner) -> None:
    """RLIM_INFINITY (-1 in Python) raises a limit the supervisor itself runs under."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limits = ResourceLimits(memory_bytes=resource.RLIM_INFINITY)
    outcome = await run(fast_config(child_cmd("report_setup.py"), spawner=spawner, limits=limits))
    assert outcome.succeeded, outcome.error
    assert outcome.result["as"] == [resource.RLIM_INFINITY, resource.RLIM_INFINITY]
    assert (soft, hard) == resource.getrlimit(resource.RLIMIT_AS)


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


async def test_a_c_library_without_posix_spawn_setsid_falls_back_to_popen(
    run: RunFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import supervisor.runner.spawner as spawner_module

    def unsupported(*args: object, **kwargs: object) -> int:
        raise NotImplementedError("setsid")

    monkeypatch.setattr(spawner_module.os, "posix_spawn", unsupported)
    monkeypatch.setattr(spawner_module, "_posix_spawn_ok", True)
    outcome = await run(fast_config(child_cmd("report_setup.py"), spawner=MODES["shim"]))
    assert outcome.succeeded, outcome.error
    assert outcome.result["sid_is_pid"] and outcome.result["fds"] == [0, 1, 2]
    assert spawner_module._posix_spawn_ok is False  # later children go straight to Popen
