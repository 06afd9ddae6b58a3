"""Every child is set up the same way by the fork server, whatever the command: its own
session, fds 0-2 only, default signals, the limits, and nothing readable of the server."""

from __future__ import annotations

import grp
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from supervisor.runner import EndReason, ResourceLimits
from tests.runner.conftest import (
    CHILDREN,
    RunFn,
    child_cmd,
    fast_config,
    mini_running,
    wait_gone,
)


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


@pytest.mark.usefixtures("parent_masks_and_ignores_signals")
async def test_child_gets_clean_signals_limits_and_own_session(run: RunFn) -> None:
    limits = ResourceLimits(memory_bytes=512 * 1024 * 1024, open_files=123)
    cfg = fast_config(child_cmd("report_setup.py"), limits=limits)
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


@pytest.mark.parametrize("how", ["no limit", "a group switch"])
async def test_no_child_may_write_a_core_file(run: RunFn, how: str) -> None:
    """Started by the server itself (no limit to set) or by a spare (a group switch): either
    way the child cannot raise RLIMIT_CORE from 0, so a crash leaves no copy of its memory
    (a tenant's document) on disk."""
    group = grp.getgrgid(os.getgid()).gr_name if how == "a group switch" else None
    outcome = await run(fast_config(child_cmd("report_setup.py"), group=group))
    assert outcome.succeeded, outcome.error
    assert outcome.result["core"] == [0, 0]


async def test_unlimited_is_a_limit_the_child_gets(run: RunFn) -> None:
    """RLIM_INFINITY (-1 in Python) raises a limit the supervisor itself runs under."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limits = ResourceLimits(memory_bytes=resource.RLIM_INFINITY)
    outcome = await run(fast_config(child_cmd("report_setup.py"), limits=limits))
    assert outcome.succeeded, outcome.error
    assert outcome.result["as"] == [resource.RLIM_INFINITY, resource.RLIM_INFINITY]
    assert (soft, hard) == resource.getrlimit(resource.RLIMIT_AS)


async def test_escaped_grandchild_is_killed(run: RunFn) -> None:
    cfg = fast_config(child_cmd("grandchild_setsid.py", "stay"))
    outcome = await run(cfg, timeout_s=0.5)
    assert outcome.ended is EndReason.TIMEOUT
    assert not wait_gone([int((outcome.progress_message or "").split()[-1])])


async def test_program_that_cannot_be_executed_is_a_start_failure(
    run: RunFn, tmp_path: Path
) -> None:
    bogus = Path(str(tmp_path)) / "not-a-program"
    bogus.write_bytes(b"\x00\x01\x02 not an executable format")
    bogus.chmod(0o755)
    outcome = await run(fast_config((str(bogus),)))
    assert outcome.ended is EndReason.START_FAILED, outcome
    assert outcome.error == f"Worker failed to start: exec {bogus}: Exec format error"
    missing = await run(fast_config(("no-such-program-anywhere",)))
    assert missing.ended is EndReason.START_FAILED


async def test_an_unknown_child_user_is_a_start_failure(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("report_setup.py"), user="no-such-user-here"))
    assert outcome.ended is EndReason.START_FAILED, outcome


PEEK = """
import json, os
got = {}
for what in ("environ", "mem"):
    try:
        with open(f"/proc/{os.getppid()}/{what}", "rb") as fh:  # the parent: the fork server
            got[what] = len(fh.read(64))
    except OSError as exc:
        got[what] = type(exc).__name__
print("RESULT: " + json.dumps(got))
"""


def _peek() -> tuple[str, ...]:
    return (sys.executable, "-S", "-c", PEEK)


def test_a_child_cannot_read_the_fork_server_s_environment_or_memory() -> None:
    """Same user, no capabilities (root's would read anything): only PR_SET_DUMPABLE 0 on
    the fork server stops its child from reading it through /proc."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop capabilities")
    no_caps = [setpriv, "--bounding-set=-all", "--inh-caps=-all"]
    mini = subprocess.run(
        [*no_caps, sys.executable, str(CHILDREN / "mini_supervisor.py"), *_peek()],
        capture_output=True,
        timeout=60,
        check=False,
    )
    lines = [ln for ln in mini.stdout.decode().splitlines() if ln.startswith("OUTCOME ")]
    assert lines, mini.stderr.decode()[-2000:]
    outcome = json.loads(lines[0][len("OUTCOME ") :])
    assert outcome["ended"] == "exited", outcome
    assert outcome["result"] == {"environ": "PermissionError", "mem": "PermissionError"}


AS_NOBODY = """
ids="$(id -u) $(id -g) $(id -G)"
touch mine && printf 'RESULT: ["%s", "%s"]\n' "$ids" "$(stat -c %U .)"
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
async def test_a_child_user_gets_its_ids_no_extra_groups_and_its_own_directory(
    run: RunFn,
) -> None:
    outcome = await run(fast_config(("/bin/sh", "-c", AS_NOBODY), user="nobody"))
    assert outcome.succeeded, outcome.error
    nobody = pwd.getpwnam("nobody")
    ids = f"{nobody.pw_uid} {nobody.pw_gid} {nobody.pw_gid}"
    assert outcome.result == [ids, "nobody"]


@needs_root
def test_a_child_under_another_user_still_dies_with_the_supervisor() -> None:
    """A change of credentials clears the parent-death signal; the server sets it again."""
    env = {**os.environ, "MINI_USER": "nobody"}
    with mini_running("/bin/sh", "-c", SLEEPER, env=env) as (mini, child_pid):
        assert psutil.Process(child_pid).uids().real == pwd.getpwnam("nobody").pw_uid
        mini.send_signal(signal.SIGKILL)
        mini.wait(timeout=10)
        assert not wait_gone([child_pid], timeout=5), "child outlived its supervisor"


SLEEPER = 'echo "PROGRESS: 1 $$"; exec sleep 600'
