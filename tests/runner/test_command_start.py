"""How the fork server starts a command: posix_spawn, through prlimit(1) when the job has
limits, so the limits hold from the command's first instruction; a request the server
cannot start fails that start alone."""

from __future__ import annotations

import asyncio
import grp
import os
import resource
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from supervisor.runner import EndReason, ForkServer, ResourceLimits, StopRequest
from supervisor.runner.forkserver import MAX_REQUEST_BYTES
from supervisor.runner.spawn import (
    PRLIMIT,
    SpawnedChild,
    SpawnSpec,
    through_prlimit,
)
from tests.runner.conftest import RunFn, child_cmd, fast_config, wait_gone

pytestmark = pytest.mark.skipif(PRLIMIT is None, reason="util-linux prlimit(1) is missing")

MiB = 1024 * 1024
# Forks before anything else; the grandchild reports the limits it inherited.
FORK_FIRST = """
import json, os, resource, sys
r, w = os.pipe()
if os.fork() == 0:
    os.write(w, json.dumps([resource.getrlimit(resource.RLIMIT_AS),
                            resource.getrlimit(resource.RLIMIT_CPU)]).encode())
    os._exit(0)
os.close(w)
got = os.read(r, 4096)
os.wait()
sys.stdin.read()
print("RESULT: " + got.decode(), flush=True)
"""


async def test_what_a_command_forks_at_once_has_its_limits(run: RunFn) -> None:
    limits = ResourceLimits(memory_bytes=512 * MiB, cpu_seconds=60)
    outcome = await run(fast_config((sys.executable, "-S", "-c", FORK_FIRST), limits=limits))
    assert outcome.succeeded, outcome.error
    assert outcome.result == [[512 * MiB, 512 * MiB], [60, 61]]


# Reads its job, then reports the limits it has.
READS_THEN_REPORTS = (
    "import json, resource, sys\n"
    "sys.stdin.read()\n"
    "got = [resource.getrlimit(r) for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU)]\n"
    "print('RESULT: ' + json.dumps(got), flush=True)\n"
)


@pytest.mark.parametrize("attempt", range(20))
async def test_a_wrapper_s_child_that_reads_the_job_has_the_limits(
    run: RunFn, attempt: int
) -> None:
    """timeout(1) forks the real command during its own start-up, and that child is the
    one reading the job: limits set on the wrapper after it started (prlimit(2) on its
    pid) would miss it now and then; they must be in place before its first instruction."""
    limits = ResourceLimits(memory_bytes=512 * MiB, cpu_seconds=60)
    argv = ("timeout", "60", sys.executable, "-S", "-c", READS_THEN_REPORTS)
    outcome = await run(fast_config(argv, limits=limits), job_json=b"{}")
    assert outcome.succeeded, outcome.error
    assert outcome.result == [[512 * MiB, 512 * MiB], [60, 61]]


def test_a_command_with_limits_is_prlimit_running_it() -> None:
    request = {
        "program": "/usr/bin/python3",
        "argv": ["python3", "-c", "pass"],
        "rlimits": [
            (resource.RLIMIT_AS, 5, 5),
            (resource.RLIMIT_CPU, 7, resource.RLIM_INFINITY),
        ],
    }
    assert PRLIMIT is not None
    wrapped = through_prlimit(request, PRLIMIT)
    assert wrapped["program"] == PRLIMIT and wrapped["rlimits"] == []
    assert wrapped["argv"] == [
        "prlimit",
        "--as=5:5",
        "--cpu=7:unlimited",
        "--",
        "/usr/bin/python3",
        "-c",
        "pass",
    ]


# What a spare wrote on a command's stderr when it could not exec it, and its exit code.
SPARE_LINE = "ingest-forkserver: exec /opt/x: No such file or directory"
SAYS_IT_NEVER_STARTED = (
    f"import os, sys\nsys.stdin.read()\nsys.stderr.write({SPARE_LINE!r} + '\\n')\n"
    "sys.stderr.flush()\nos._exit(127)\n"
)


async def test_a_command_run_by_a_spare_cannot_claim_it_never_started(run: RunFn) -> None:
    """A start failure pauses every slot of the daemon, whatever the tenant: only the
    spare itself can report one, never a command through what it prints and its exit
    code. (A group switch makes a spare start the command.)"""
    group = grp.getgrgid(os.getgid()).gr_name
    cfg = fast_config((sys.executable, "-S", "-c", SAYS_IT_NEVER_STARTED), group=group)
    outcome = await run(cfg, job_json=b"{}")
    assert outcome.ended is EndReason.EXITED, outcome
    assert outcome.exit_code == 127


# A command that fails on its own, saying what prlimit would say.
FORGED = (
    "import sys, time\n"
    "sys.stdin.read()\n"
    "print('RESULT: {\"done\": true}', flush=True)\n"
    "time.sleep(float(sys.argv[1]))\n"
    "sys.stderr.write('prlimit: failed to set the AS resource limit: tenant says so\\n')\n"
    "sys.exit(1)\n"
)


@pytest.mark.parametrize("limits", [ResourceLimits(cpu_seconds=60), ResourceLimits()])
async def test_a_command_that_says_what_prlimit_says_is_still_its_own_failure(
    run: RunFn, limits: ResourceLimits
) -> None:
    """Not a start failure (which is not counted as a run, trips the gate pausing every
    slot, and forgets the CPU used): the command ran and failed."""
    cfg = fast_config((sys.executable, "-S", "-c", FORGED, "0.3"), limits=limits)
    outcome = await run(cfg, job_json=b"{}")
    assert outcome.ended is EndReason.EXITED, outcome
    assert outcome.exit_code == 1 and outcome.cpu_s > 0


async def test_a_stopped_command_that_says_what_prlimit_says_ends_as_stopped(run: RunFn) -> None:
    handler = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    sys.stderr.write('prlimit: failed to set the AS resource limit: bye\\n')\n"
        "    sys.exit(1)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('PROGRESS: 1 up', flush=True)\n"
        "time.sleep(60)\n"
    )
    stop = StopRequest()
    cfg = fast_config((sys.executable, "-S", "-c", handler), limits=ResourceLimits(cpu_seconds=60))
    task = asyncio.create_task(
        run(cfg, stop=stop, on_progress=lambda _p, _m: stop.request(EndReason.CANCELLED))
    )
    outcome = await task
    assert outcome.ended is EndReason.CANCELLED, outcome


async def test_a_file_execvp_would_hand_to_sh_keeps_the_exec_error(
    run: RunFn, tmp_path: Path
) -> None:
    """prlimit(1) uses execvp(3), which runs a file without a known format through
    /bin/sh; such a command is started by a spare, whose execve(2) refuses it."""
    bogus = tmp_path / "no-format"
    bogus.write_text("echo this must not run as a shell script\n")
    bogus.chmod(0o755)
    outcome = await run(fast_config((str(bogus),), limits=ResourceLimits(cpu_seconds=60)))
    assert outcome.ended is EndReason.START_FAILED, outcome
    assert outcome.error == f"Worker failed to start: exec {bogus}: Exec format error"


# Sends SIGSTOP to every other waiting spare of its fork server (its parent's children).
STOP_THE_SPARES = """
import os, signal, sys
sys.stdin.read()
for pid in open(f"/proc/{os.getppid()}/task/{os.getppid()}/children").read().split():
    if int(pid) != os.getpid() and open(f"/proc/{pid}/comm").read().strip() == "ingest-spare":
        os.kill(int(pid), signal.SIGSTOP)
"""


async def test_spares_a_child_stopped_are_continued(run: RunFn) -> None:
    """A child of the daemon's user can stop the spares waiting beside it; the job handed
    to a stopped spare would wait for its timeout. The daemon continues them."""
    server = ForkServer(spares=2)
    group = grp.getgrgid(os.getgid()).gr_name  # a group switch: spares start these
    stopper = fast_config((sys.executable, "-S", "-c", STOP_THE_SPARES), group=group)
    quick = fast_config(child_cmd("exit_code.py", "0"), group=group, fork_server=server)
    try:
        first = await run(replace(stopper, fork_server=server), job_json=b"{}")
        assert first.exit_code == 0, first.error
        for _ in range(3):
            outcome = await run(quick, job_json=b"{}", timeout_s=8)
            assert outcome.ended is EndReason.EXITED and outcome.exit_code == 0, outcome
            assert outcome.wall_s < 4, outcome
    finally:
        server.close()


async def test_a_request_the_server_cannot_start_fails_alone(run: RunFn) -> None:
    """A NUL byte in the environment (an operator's INGEST_CHILD_ENV value, say) makes
    posix_spawn raise in the server, and a request can outgrow one datagram: that start
    fails, the server and its running job go on."""
    server = ForkServer(spares=0)
    started = asyncio.Event()
    stop = StopRequest()
    sleeper = fast_config(child_cmd("sleep_forever.py"), fork_server=server)
    exits = fast_config(child_cmd("exit_code.py", "0"), fork_server=server)
    try:
        running = asyncio.create_task(
            run(sleeper, stop=stop, on_progress=lambda _p, _m: started.set())
        )
        await started.wait()
        pid = server.pid
        nul = await run(replace(exits, extra_env={"X": "a\0b"}))
        assert nul.ended is EndReason.START_FAILED, nul
        huge = {"X": "y" * (MAX_REQUEST_BYTES + 1)}
        big = await run(replace(exits, extra_env=huge))
        assert big.ended is EndReason.START_FAILED and "bytes" in (big.error or ""), big
        ok = await run(exits, job_json=b"{}")
        assert ok.exit_code == 0, ok.error
        assert server.pid == pid
        assert not running.done()
        stop.request(EndReason.CANCELLED)
        assert (await running).ended is EndReason.CANCELLED
    finally:
        server.close()


def test_a_server_left_with_work_by_another_event_loop_is_replaced() -> None:
    """Its messages would reach the wrong loop's callers: the server is replaced, and the
    child the other loop left behind is killed with it."""
    server = ForkServer(spares=0)

    async def spawn(code: str) -> SpawnedChild:
        child = await server.spawn(SpawnSpec((sys.executable, "-S", "-c", code), {}, "/"))
        for fd in (child.stdin_fd, child.stdout_fd, child.stderr_fd):
            os.close(fd)
        return child

    async def run_to_end() -> int | None:
        return (await (await spawn("pass")).exited).exit_code

    try:
        left = asyncio.run(spawn("import time; time.sleep(60)")).pid
        first = server.pid
        assert asyncio.run(run_to_end()) == 0
        assert server.pid not in (None, first)
        assert not wait_gone([left]), "the left child outlived its replaced server"
    finally:
        server.close()
