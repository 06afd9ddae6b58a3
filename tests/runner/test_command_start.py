"""How the fork server starts a command: posix_spawn, then its limits set with prlimit(2)
before the daemon gives it its job; a request the server cannot start fails that start
alone."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path

from supervisor.runner import EndReason, ForkServer, ResourceLimits, StopRequest
from supervisor.runner.forkserver import MAX_REQUEST_BYTES
from supervisor.runner.spawn import SpawnedChild, SpawnSpec, start_failure
from tests.runner.conftest import RunFn, child_cmd, fast_config, wait_gone

MiB = 1024 * 1024
# Reads its job, then forks; it and the grandchild report the limits they have.
FORK_AFTER_JOB = """
import json, os, resource, sys
def limits():
    return [resource.getrlimit(r) for r in
            (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_NOFILE, resource.RLIMIT_CORE)]
sys.stdin.read()
r, w = os.pipe()
if os.fork() == 0:
    os.write(w, json.dumps(limits()).encode())
    os._exit(0)
os.close(w)
forked = json.loads(os.read(r, 4096))
os.wait()
print("RESULT: " + json.dumps({"own": limits(), "forked": forked}), flush=True)
"""


async def test_a_command_and_what_it_forks_have_their_limits_once_given_the_job(
    run: RunFn,
) -> None:
    limits = ResourceLimits(memory_bytes=512 * MiB, cpu_seconds=60, open_files=200)
    outcome = await run(fast_config((sys.executable, "-S", "-c", FORK_AFTER_JOB), limits=limits))
    assert outcome.succeeded, outcome.error
    want = [[512 * MiB, 512 * MiB], [60, 61], [200, 200], [0, 0]]
    assert outcome.result == {"own": want, "forked": want}


async def test_a_limit_that_cannot_be_set_fails_the_start_and_leaves_nothing(
    run: RunFn, tmp_path: Path
) -> None:
    """More open files than the kernel allows any process (fs.nr_open) is refused even
    to root: the command, already running, is killed before it is given its job."""
    marker = tmp_path / "got-the-job"
    code = f"import sys, time\nsys.stdin.read()\nopen({str(marker)!r}, 'w')\ntime.sleep(60)\n"
    token = f"never-given-{os.getpid()}-{id(marker)}"
    argv = (sys.executable, "-S", "-c", code, token)
    outcome = await run(fast_config(argv, limits=ResourceLimits(open_files=1 << 40)))
    assert outcome.ended is EndReason.START_FAILED, outcome
    assert outcome.error is not None and "resource limit" in outcome.error, outcome.error
    assert not marker.exists()
    deadline = asyncio.get_running_loop().time() + 10
    while any(token in cmd for cmd in _command_lines()):
        assert asyncio.get_running_loop().time() < deadline, "the refused command still runs"
        await asyncio.sleep(0.05)


def _command_lines() -> list[str]:
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    lines.append(fh.read().decode(errors="replace"))
            except OSError:
                continue
    return lines


def test_only_a_spare_s_own_line_is_taken_for_a_start_failure() -> None:
    spare = b"ingest-forkserver: exec /x: Exec format error\n"
    assert start_failure("spare", 127, spare) == "exec /x: Exec format error"
    assert start_failure("spare", 1, spare) is None
    assert start_failure("spare", 127, b"output first\n" + spare) is None
    assert start_failure("posix_spawn", 127, spare) is None  # a command can say the same


async def test_a_file_of_no_known_format_is_refused_not_run_by_sh(
    run: RunFn, tmp_path: Path
) -> None:
    """execvp(3) would run a file without a known format through /bin/sh; the server's
    posix_spawn is execve(2), which refuses it."""
    bogus = tmp_path / "no-format"
    bogus.write_text("echo this must not run as a shell script\n")
    bogus.chmod(0o755)
    outcome = await run(fast_config((str(bogus),), limits=ResourceLimits(cpu_seconds=60)))
    assert outcome.ended is EndReason.START_FAILED, outcome
    assert outcome.error == f"Worker failed to start: exec {bogus}: Exec format error"


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
