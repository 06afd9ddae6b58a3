"""Job working directories: brand-new, private and empty on arrival, never shared or
passed from one job to the next, and removed when the job ends however it ends."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from supervisor.runner import EndReason, StopRequest, run_child
from supervisor.runner.workdir import (
    JobsRoot,
    new_workdir,
    removals_finished,
    remove_left_dir,
    remove_stale_jobs_roots,
    stale_jobs_roots,
)
from tests.runner.conftest import RunFn, child_cmd, fast_config

# No tree sample during these short runs: the escapee must be one no sample saw (a sample
# would make it a known stray, killed and counted by the runner itself).
UNSAMPLED = {"rss_sample_interval_s": 60.0}


@pytest.mark.parametrize("mark", ["nothing", "file", "chmod", "xattr"])
async def test_every_job_gets_a_new_private_empty_directory_removed_at_its_end(
    run: RunFn, mark: str
) -> None:
    first = await run(fast_config(child_cmd("touch_workdir.py", mark)))
    second = await run(fast_config(child_cmd("touch_workdir.py", mark)))
    for outcome in (first, second):
        assert outcome.succeeded, outcome.error
        assert outcome.result["found"] == []
        assert not await asyncio.to_thread(os.path.exists, outcome.result["cwd"])
    assert first.result["cwd"] != second.result["cwd"]


async def test_the_directory_is_private_to_the_job(run: RunFn) -> None:
    code = "import os;st=os.stat('.');print(f'RESULT: [{st.st_mode & 0o777}, {st.st_uid}]')"
    outcome = await run(fast_config((sys.executable, "-S", "-c", code)))
    assert outcome.succeeded, outcome.error
    assert outcome.result == [0o700, os.getuid()]


async def test_a_killed_job_s_directory_is_removed(run: RunFn) -> None:
    outcome = await run(fast_config(child_cmd("touch_workdir.py", "sleep")), timeout_s=0.5)
    assert outcome.ended is EndReason.TIMEOUT
    assert not await asyncio.to_thread(os.path.exists, outcome.result["cwd"])


async def test_concurrent_jobs_never_share_a_directory(run: RunFn) -> None:
    cfg = fast_config(child_cmd("touch_workdir.py"))
    outcomes = await asyncio.gather(*(run(cfg) for _ in range(4)))
    dirs = [o.result["cwd"] for o in outcomes]
    assert len(set(dirs)) == 4
    assert all(o.result["found"] == [] for o in outcomes)


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


LEAVE_FILES = "import os\nfor i in range(int(os.sys.argv[1])):\n    open(f'f{i}', 'w').close()\n"


async def test_removing_a_full_directory_never_stalls_the_event_loop(run: RunFn) -> None:
    """A child may leave its directory full of files. Removing them must not block the
    event loop that every slot, lease renewal and heartbeat of the daemon shares."""
    loop = asyncio.get_running_loop()
    stalls: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            before = loop.time()
            await asyncio.sleep(0.01)
            stalls.append(loop.time() - before - 0.01)

    ticker = asyncio.create_task(tick())
    started = loop.time()
    code = LEAVE_FILES + "print('RESULT: ' + repr(os.getcwd()).replace(\"'\", '\"'))"
    outcome = await run(fast_config((sys.executable, "-S", "-c", code, "60000")), timeout_s=60)
    done.set()
    await ticker
    assert outcome.succeeded, outcome.error
    assert not await asyncio.to_thread(os.path.exists, outcome.result)
    # Removing 60,000 files takes about half a second here; no tick waited that long.
    assert max(stalls) < 0.2, (max(stalls), loop.time() - started)


# Leaves a file and a tree deeper than Python's recursion limit (fd by fd, no long paths).
DEEP_TREE = (
    "import json, os\n"
    "open('tenant.txt', 'w').write('a tenant document')\n"
    "fd = os.open('.', os.O_RDONLY)\n"
    "for _ in range(3000):\n"
    "    os.mkdir('d', dir_fd=fd)\n"
    "    fd, old = os.open('d', os.O_RDONLY, dir_fd=fd), fd\n"
    "    os.close(old)\n"
    "print('RESULT: ' + json.dumps({'cwd': os.getcwd()}), flush=True)\n"
)


@pytest.mark.parametrize("user", [None, "nobody"])
async def test_a_tree_deeper_than_python_recurses_is_removed(run: RunFn, user: str | None) -> None:
    python = sys.executable
    if user is not None:
        system_python = shutil.which("python3", path="/usr/bin:/bin")
        if os.geteuid() != 0 or system_python is None:
            pytest.skip("needs root and /usr/bin/python3 to run a child as nobody")
        python = system_python
    root = tempfile.mkdtemp(prefix="deep-tree-", dir="/tmp")  # reachable by nobody
    os.chmod(root, 0o711)
    try:
        outcome = await run(fast_config((python, "-S", "-c", DEEP_TREE), tmp_root=root, user=user))
        assert outcome.succeeded, outcome.error
        assert not await asyncio.to_thread(os.path.lexists, outcome.result["cwd"])
    finally:
        await asyncio.to_thread(subprocess.run, ["rm", "-rf", "--", root], check=False)


async def test_a_symlink_left_in_place_of_the_directory_leads_its_removal_nowhere(
    run: RunFn,
) -> None:
    """A child may move its own directory aside and leave a symlink in its place: what
    removes a job's directory must not follow it (chmod -R would give the owner back every
    right on the tree it points to, and emptying it would remove another's files)."""
    outside = tempfile.mkdtemp(prefix="symlink-target-")
    for name in ("keep-1", "keep-2"):
        with open(os.path.join(outside, name), "w") as fh:  # noqa: ASYNC230 - a test's set-up
            fh.write("not the job's")
    os.chmod(outside, 0o500)
    swap = (
        "import os, sys; sys.stdin.read(); cwd = os.getcwd(); os.chdir('/'); "
        f"os.rename(cwd, cwd + '-moved'); os.symlink({outside!r}, cwd); "
        "print('RESULT: ' + repr(cwd).replace(\"'\", '\"'))"
    )
    moved = ""
    try:
        outcome = await run(fast_config((sys.executable, "-S", "-c", swap)))
        assert outcome.succeeded, outcome.error
        moved = outcome.result + "-moved"
        assert os.stat(outside).st_mode & 0o777 == 0o500
        assert sorted(os.listdir(outside)) == ["keep-1", "keep-2"]
        assert not await asyncio.to_thread(os.path.lexists, outcome.result)
    finally:
        os.chmod(outside, 0o700)
        shutil.rmtree(outside)
        if moved:
            shutil.rmtree(moved, ignore_errors=True)


def test_a_jobs_root_made_again_is_locked_like_the_first(tmp_path: Path) -> None:
    """A cleaner removed a live daemon's directory of job directories; the daemon makes it
    again for its next job, locked, so no other daemon takes it for a dead one's."""
    root = JobsRoot.create(str(tmp_path))
    try:
        os.rmdir(root.path)
        job_dir = new_workdir(root.path, None)
        assert os.path.dirname(job_dir) == root.path
        assert stale_jobs_roots(str(tmp_path)) == []
        os.rmdir(job_dir)
    finally:
        root.remove()


# A child under the daemon's own user owns the jobs root as the daemon does: it can move
# it away and leave a file or a link in its place, or take its rights.
TAMPER = {
    "file": "r = os.path.dirname(os.getcwd()); os.rename(r, r + '.gone'); open(r, 'w').close()",
    "link": "r = os.path.dirname(os.getcwd()); os.rename(r, r + '.gone'); "
    "os.symlink(sys.argv[1], r)",
    "chmod": "os.chmod(os.path.dirname(os.getcwd()), 0)",
}


@pytest.mark.parametrize("how", sorted(TAMPER))
async def test_a_child_that_tampers_with_the_jobs_root_stops_no_later_job(
    run: RunFn, tmp_path: Path, how: str
) -> None:
    """Every later job (any tenant's) still starts, in a root of the daemon's own: 0711,
    locked, never behind a link the child chose."""
    base, elsewhere = tmp_path / "base", tmp_path / "elsewhere"
    base.mkdir()
    elsewhere.mkdir()
    root = JobsRoot.create(str(base))
    try:
        code = f"import os, sys\n{TAMPER[how]}\n"
        cfg = fast_config((sys.executable, "-S", "-c", code, str(elsewhere)), tmp_root=root.path)
        tampered = await run(cfg)
        assert tampered.ended is EndReason.EXITED and tampered.exit_code == 0, tampered
        record = "import os; print('RESULT: ' + repr(os.getcwd()).replace(\"'\", '\"'))"
        for _ in range(2):
            later = await run(fast_config((sys.executable, "-S", "-c", record), tmp_root=root.path))
            assert later.ended is EndReason.EXITED and later.exit_code == 0, later
            assert os.path.dirname(later.result) == root.path
        assert os.listdir(elsewhere) == []
        info = os.lstat(root.path)
        assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o711
        assert stale_jobs_roots(str(base)) == []  # locked: no other daemon takes it
    finally:
        root.remove()


async def test_a_stop_during_the_sweep_of_dead_daemons_directories_ends_it(
    tmp_path: Path,
) -> None:
    """A daemon removing what dead daemons left (any number of job directories) stops
    doing so at a stop signal, so that it stops at once; the next daemon goes on."""
    dead = JobsRoot.create(str(tmp_path))
    os.close(dead.lock_fd)  # its daemon is gone: its lock with it
    for i in range(3):
        await asyncio.to_thread(os.makedirs, os.path.join(dead.path, f"ingest-job-{i}", "sub"))
    config = fast_config(None)
    assert await remove_stale_jobs_roots(config, str(tmp_path), stopping=lambda: True) == 0
    assert len(os.listdir(dead.path)) == 3
    assert await remove_stale_jobs_roots(config, str(tmp_path)) == 1
    assert not await asyncio.to_thread(os.path.exists, dead.path)


async def test_a_directory_left_full_is_removed_after_the_job_not_before_its_outcome() -> None:
    """However many files a child leaves, its outcome (and so its slot's next job) does
    not wait for their removal, which goes on in the background and is done in the end."""
    code = LEAVE_FILES + "print('RESULT: ' + repr(os.getcwd()).replace(\"'\", '\"'))"
    outcome = await run_child(
        fast_config((sys.executable, "-S", "-c", code, "60000")),
        job_id=f"full-{uuid.uuid4().hex[:8]}",
        attempt=1,
        job_json=b"{}",
        timeout_s=60,
        stop=StopRequest(),
    )
    assert outcome.succeeded, outcome.error
    assert await asyncio.to_thread(os.path.exists, outcome.result)  # still going
    assert await removals_finished(60.0)
    assert not await asyncio.to_thread(os.path.exists, outcome.result)


async def test_at_most_two_full_directories_are_removed_in_the_background() -> None:
    """A third directory left full while two are still being removed is removed before
    its job's end returns: a tenant whose children keep leaving full directories holds
    up its own slots, not an unbounded number of the daemon's threads and processes. A
    directory left with a file or two meanwhile goes at once, behind nobody."""
    base = await asyncio.to_thread(tempfile.mkdtemp, prefix="full-dirs-")
    sizes = [40000, 40000, 2, 40000]
    dirs = [os.path.join(base, f"job-{i}") for i in range(len(sizes))]

    def fill(path: str, files: int) -> None:
        os.mkdir(path)
        for i in range(files):
            open(os.path.join(path, f"f{i}"), "w").close()

    try:
        for path, files in zip(dirs, sizes, strict=True):
            await asyncio.to_thread(fill, path, files)
        config = fast_config(child_cmd("touch_workdir.py"))
        present = []
        for path in dirs:
            await remove_left_dir(config, path)
            present.append(await asyncio.to_thread(os.path.exists, path))
        assert present == [True, True, False, False]
        assert await removals_finished(60.0)
        assert not any([await asyncio.to_thread(os.path.exists, path) for path in dirs])
    finally:
        await asyncio.to_thread(shutil.rmtree, base, True)
