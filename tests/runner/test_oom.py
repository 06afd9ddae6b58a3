"""Telling the OOM killer from someone's `kill -9`, by the memory cgroup's OOM counter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.runner import EndReason, StopRequest
from supervisor.runner.oom import oom_kills
from tests.runner.conftest import CHILDREN, RunFn, child_cmd, fast_config

MiB = 1024 * 1024


async def test_a_kill_9_from_elsewhere_is_not_called_out_of_memory(run: RunFn) -> None:
    started: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_progress(pct: float, msg: str | None) -> None:
        if not started.done():
            started.set_result(pct)

    task = asyncio.ensure_future(
        run(fast_config(child_cmd("sleep_forever.py")), stop=StopRequest(), on_progress=on_progress)
    )
    await asyncio.wait_for(started, 10)
    pid = _pid_of_job_child()
    os.kill(pid, signal.SIGKILL)  # an operator, not the kernel
    outcome = await task
    assert outcome.ended is EndReason.EXITED and outcome.signal == signal.SIGKILL
    if oom_kills() is None:  # no readable counter here: the runner has to assume OOM
        assert outcome.oom_killed
    else:
        assert not outcome.oom_killed
        assert outcome.error == "Worker killed by signal SIGKILL"


def _pid_of_job_child() -> int:
    import psutil

    for proc in psutil.Process().children(recursive=True):  # the fork server's child
        try:
            if "sleep_forever.py" in " ".join(proc.cmdline()):
                return proc.pid
        except psutil.Error:  # another test's zombie, say
            continue
    raise AssertionError("the job's child is not running")


@pytest.fixture
def memory_cgroup() -> Iterator[Path]:
    """A v1 memory cgroup under ours, limited to 200 MiB (skipped where that is impossible)."""
    ours = next(
        (line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
         if "memory" in line.split(":", 2)[1].split(",")),
        None,
    )
    if ours is None:
        pytest.skip("no cgroup v1 memory controller (a v2-only host needs delegation)")
    group = Path("/sys/fs/cgroup/memory") / ours.lstrip("/") / f"ingest-oom-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(200 * MiB))
    except OSError as exc:
        pytest.skip(f"cannot make a memory cgroup here: {exc}")
    yield group
    for pid in (group / "cgroup.procs").read_text().split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    group.rmdir()


def test_the_memory_cgroup_s_oom_killer_is_named(memory_cgroup: Path) -> None:
    """A supervisor in a 200 MiB cgroup runs a child that wants 2 GiB: the kernel kills it."""
    mini = subprocess.run(
        [sys.executable, str(CHILDREN / "mini_supervisor.py"), *child_cmd("memory_hog.py", "2048")],
        env={**os.environ, "MINI_CGROUP_PROCS": str(memory_cgroup / "cgroup.procs")},
        capture_output=True,
        timeout=120,
        check=True,
    )
    line = next(x for x in mini.stdout.decode().splitlines() if x.startswith("OUTCOME "))
    outcome = json.loads(line[len("OUTCOME ") :])
    assert outcome["ended"] == "exited" and outcome["signal"] == signal.SIGKILL
    assert outcome["oom_killed"] is True
    assert outcome["error"].startswith("Worker killed by signal SIGKILL (out of memory)")


V1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
V2 = "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n"


def _tree(root: Path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return str(root)


@pytest.mark.parametrize(
    ("cgroup", "files", "expected"),
    [
        ("4:memory:/a/b\n0::/\n", {"memory/a/b/memory.oom_control": V1}, 3),
        ("0::/sys.slice/ingest@1.service\n", {"sys.slice/ingest@1.service/memory.events": V2}, 2),
        ("4:memory:/m\n0::/u\n", {"unified/u/memory.events": V2}, 2),  # hybrid, v1 unreadable
        ("0::/odd:name\n", {"odd:name/memory.events": V2}, 2),
        ("0::/\n", {}, None),  # the root cgroup has no counter: assume OOM
        ("12:cpu,cpuacct:/x\n", {"cpu,cpuacct/x/memory.events": V2}, None),
    ],
)
def test_the_counter_is_found_on_v1_v2_and_hybrid_hosts(
    tmp_path: Path, cgroup: str, files: dict[str, str], expected: int | None
) -> None:
    from supervisor.runner.oom import _read, counter_file_for

    path = counter_file_for(cgroup, _tree(tmp_path, files))
    assert (None if path is None else _read(path)) == expected
