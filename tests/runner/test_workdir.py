"""Job working directories: private and empty on arrival, never shared, never left behind.

An untouched directory from a cleanly ended job is kept for a later job (creating and
removing one per job was the runner's largest cost on ext4); anything else is removed.
"Cleanly" includes: nothing of the job can still be running, which only a supervisor that
is a child subreaper can tell; without that role nothing is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from supervisor.runner import EndReason
from supervisor.runner.orphans import ORPHANS
from supervisor.runner.workdir import WORKDIRS
from tests.runner.conftest import RunFn, child_cmd, fast_config


@pytest.fixture(autouse=True)
def no_spares() -> Iterator[None]:
    WORKDIRS.clear()
    yield
    WORKDIRS.clear()


# No tree sample during these short runs: the escapee must be one no sample saw (a sample
# would make it a known stray, killed and counted by the runner itself).
UNSAMPLED = {"rss_sample_interval_s": 60.0}


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _assert_private_and_empty(path: str) -> None:
    st = os.lstat(path)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.getuid() and os.listdir(path) == []


@pytest.mark.usefixtures("subreaper")
async def test_untouched_directory_is_kept_and_reused_empty(run: RunFn) -> None:
    first = await run(fast_config(child_cmd("touch_workdir.py")))
    assert first.succeeded, first.error
    kept = first.result["cwd"]
    assert WORKDIRS.spares() == [kept]
    _assert_private_and_empty(kept)
    second = await run(fast_config(child_cmd("touch_workdir.py")))
    assert second.result == {"cwd": kept, "found": [], "spy": None}
    WORKDIRS.clear()
    assert not _exists(kept)


@pytest.mark.usefixtures("subreaper")
@pytest.mark.parametrize("mark", ["file", "chmod", "xattr"])
async def test_a_directory_the_job_changed_is_removed_not_reused(run: RunFn, mark: str) -> None:
    outcome = await run(fast_config(child_cmd("touch_workdir.py", mark)))
    assert outcome.succeeded, outcome.error
    assert not _exists(outcome.result["cwd"])
    assert WORKDIRS.spares() == []


@pytest.mark.usefixtures("subreaper")
async def test_a_killed_job_s_directory_is_removed(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("touch_workdir.py", "sleep")), timeout_s=0.5)
    assert outcome.ended is EndReason.TIMEOUT
    assert not _exists(outcome.result["cwd"])
    assert WORKDIRS.spares() == []


@pytest.mark.usefixtures("subreaper")
async def test_a_kept_directory_that_vanished_is_not_handed_out(run: RunFn) -> None:
    first = await run(fast_config(child_cmd("touch_workdir.py")))
    kept = first.result["cwd"]
    await asyncio.to_thread(os.rmdir, kept)  # as systemd-tmpfiles would after days idle
    second = await run(fast_config(child_cmd("touch_workdir.py")))
    assert second.succeeded, second.error
    assert second.result["cwd"] != kept and second.result["found"] == []


@pytest.mark.usefixtures("subreaper")
async def test_concurrent_jobs_never_share_a_directory(run: RunFn) -> None:
    await run(fast_config(child_cmd("touch_workdir.py")))  # leaves one spare
    cfg = fast_config(child_cmd("touch_workdir.py"))
    outcomes = await asyncio.gather(*(run(cfg) for _ in range(4)))
    dirs = [o.result["cwd"] for o in outcomes]
    assert len(set(dirs)) == 4
    assert all(o.result["found"] == [] for o in outcomes)


@pytest.mark.usefixtures("subreaper")
async def test_a_directory_an_escaped_process_may_still_write_into_is_not_reused(
    run: RunFn,
) -> None:
    """The child exits at once, leaving a daemonized process in its own session that
    writes into the directory a moment later: the directory must not go to the next job."""
    first = await run(fast_config(child_cmd("touch_workdir.py", "spy"), **UNSAMPLED))
    assert first.succeeded, first.error
    assert first.stray_processes_killed == 1  # adopted, attributed to the run, killed
    assert first.result["cwd"] not in WORKDIRS.spares()
    assert not _exists(first.result["cwd"])
    cfg = fast_config(child_cmd("touch_workdir.py"))
    later = await asyncio.gather(*(run(cfg) for _ in range(3)))
    assert all(o.result["found"] == [] for o in later)


@pytest.mark.usefixtures("subreaper")
async def test_reuse_can_be_turned_off(run: RunFn) -> None:
    first = await run(fast_config(child_cmd("touch_workdir.py"), reuse_workdirs=False))
    assert first.succeeded, first.error
    assert WORKDIRS.spares() == [] and not _exists(first.result["cwd"])


@pytest.mark.usefixtures("subreaper")
async def test_a_spared_escapee_still_keeps_its_directory_from_reuse(run: RunFn) -> None:
    """The escapee scrubbed its environment: this process (not the daemon) may not kill
    it, but it might be the run's, so the directory is not handed to a later job."""
    first = await run(fast_config(child_cmd("touch_workdir.py", "spy-scrubbed"), **UNSAMPLED))
    try:
        assert first.succeeded, first.error
        assert first.stray_processes_killed == 0
        assert first.result["cwd"] not in WORKDIRS.spares()
        assert not _exists(first.result["cwd"])
    finally:  # the spared escapee is this process's adopted child now: kill and reap it
        with contextlib.suppress(ProcessLookupError):
            os.kill(first.result["spy"], signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            await asyncio.to_thread(os.waitpid, first.result["spy"], 0)


async def test_without_the_subreaper_role_nothing_is_reused(run: RunFn) -> None:
    assert not ORPHANS.enabled
    first = await run(fast_config(child_cmd("touch_workdir.py")))
    assert first.succeeded, first.error
    assert WORKDIRS.spares() == [] and not _exists(first.result["cwd"])


def test_kept_directories_are_removed_when_the_supervisor_exits(tmp_path: object) -> None:
    code = (
        "import asyncio, sys\n"
        "from supervisor.runner import RunnerConfig, StopRequest, run_child\n"
        "from supervisor.runner.orphans import ORPHANS\n"
        "ORPHANS.become_subreaper(kill_unattributed=True)\n"
        "cfg = RunnerConfig(command=(sys.executable, '-S', '-c', 'pass'), tmp_root=sys.argv[1])\n"
        "out = asyncio.run(run_child(cfg, job_id='j', attempt=1, job_json=b'{}', timeout_s=30,"
        " stop=StopRequest()))\n"
        "from supervisor.runner.workdir import WORKDIRS\n"
        "assert out.succeeded and len(WORKDIRS.spares()) == 1, out\n"
    )
    root = str(tmp_path)
    subprocess.run([sys.executable, "-c", code, root], check=True, timeout=60)
    assert os.listdir(root) == []


@pytest.mark.usefixtures("subreaper")
async def test_killed_orphans_and_their_children_are_reaped_by_a_later_sweep(run: RunFn) -> None:
    """Library mode reaps only zombies known to be jobs': the orphan killed at its run's end
    and the child it had (a zombie of ours too, once its parent died) are both gone after
    the next run's sweep."""
    first = await run(fast_config(child_cmd("orphan_maker.py", "0.2", "family"), **UNSAMPLED))
    assert first.stray_processes_killed == 1
    orphan, grandchild = (int(p) for p in (first.progress_message or "").split()[-2:])
    await run(fast_config(child_cmd("touch_workdir.py")))
    deadline = time.monotonic() + 5
    while await asyncio.to_thread(_exists_pid, orphan, grandchild):
        assert time.monotonic() < deadline, "a killed orphan was left a zombie"
        await run(fast_config(child_cmd("touch_workdir.py")))


def _exists_pid(*pids: int) -> bool:
    return any(psutil.pid_exists(p) for p in pids)
