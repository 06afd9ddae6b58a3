"""The fork server with the built-in ingest_worker: results, isolation, stopping, death."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor.runner import (
    ChildOutcome,
    EndReason,
    ForkServer,
    ResourceLimits,
    RunnerConfig,
    SpawnSpec,
    StopRequest,
    run_child,
)
from supervisor.runner.forkserver import ForkServerError
from supervisor.runner.spawn import SpawnedChild
from tests.runner.conftest import child_cmd, fast_config, job_processes, wait_gone
from tests.waiting import poll

WORKER_ENV = {"INGEST_CHUNK_STORE": "none", "INGEST_CRAWL_ALLOW_PRIVATE": "1"}


class RecordingSpawner(ForkServer):
    """Remembers the children it started, so tests can look at the processes."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[SpawnedChild] = []
        self.one_started = asyncio.Event()

    async def spawn(self, spec: SpawnSpec) -> SpawnedChild:
        child = await super().spawn(spec)
        self.started.append(child)
        self.one_started.set()
        return child


@pytest.fixture
def spawner() -> Iterator[RecordingSpawner]:
    s = RecordingSpawner()
    yield s
    s.close()


def config(spawner: ForkServer, **overrides: Any) -> RunnerConfig:
    overrides.setdefault("extra_env", WORKER_ENV)
    command = overrides.pop("command", None)
    return fast_config(command, fork_server=spawner, **overrides)


def text_job(job_id: str, text: str = "hello fork server " * 40, **extra: Any) -> bytes:
    source = {"type": "text", "text": text}
    return json.dumps({"job_id": job_id, "tenant_id": "t", "data_source": source, **extra}).encode()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback HTTP address that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield f"http://127.0.0.1:{srv.getsockname()[1]}/slow"
    srv.close()


def url_job(job_id: str, url: str) -> bytes:
    source = {"type": "url", "url": url}
    return json.dumps({"job_id": job_id, "tenant_id": "t", "data_source": source}).encode()


async def run(cfg: RunnerConfig, job: bytes, **kw: Any) -> ChildOutcome:
    return await run_child(
        cfg,
        job_id=kw.pop("job_id", "z1"),
        attempt=1,
        job_json=job,
        timeout_s=kw.pop("timeout_s", 20.0),
        stop=kw.pop("stop", StopRequest()),
        **kw,
    )


def test_text_jobs_stream_progress_and_return_results(spawner: RecordingSpawner) -> None:
    seen: list[float] = []

    async def main() -> list[ChildOutcome]:
        cfg = config(spawner, progress_interval_s=0.0)
        return [
            await run(cfg, text_job(f"z{i}"), on_progress=lambda p, _m: seen.append(p))
            for i in range(3)
        ]

    outcomes = asyncio.run(main())
    for o in outcomes:
        assert o.ended is EndReason.EXITED and o.exit_code == 0, o.error
        assert o.result["chunks"] >= 1 and o.result["store"] == "none"
        assert o.progress == 100 and o.progress_lines >= 2
    assert 100 in seen
    pids = [c.pid for c in spawner.started]
    assert len(set(pids)) == 3


def test_bad_input_exits_65_and_the_server_keeps_serving(spawner: RecordingSpawner) -> None:
    async def main() -> tuple[ChildOutcome, ChildOutcome]:
        cfg = config(spawner)
        bad = await run(cfg, b'{"job_id": "z1", "data_source": {"type": "text"}}')
        good = await run(cfg, text_job("z2"))
        return bad, good

    bad, good = asyncio.run(main())
    assert bad.ended is EndReason.EXITED and bad.exit_code == 65
    assert bad.error is not None and "ingest_worker:" in bad.error
    assert good.exit_code == 0


def test_children_get_the_allowlisted_env_not_the_daemons(
    spawner: RecordingSpawner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not passed through: a child reading it would embed with 16 dimensions, not 384.
    monkeypatch.setenv("INGEST_EMBEDDING_DIM", "16")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "server-secret-value")

    async def main() -> ChildOutcome:
        return await run(config(spawner), text_job("z1"))

    outcome = asyncio.run(main())
    assert outcome.exit_code == 0, outcome.error
    assert outcome.result["embedder"] == "hash-384"
    server = spawner.pid
    assert server is not None
    # Not dumpable: only a privileged reader (as these tests run here) sees its environ.
    server_env = psutil.Process(server).environ() if os.geteuid() == 0 else {}
    assert "SUPABASE_SERVICE_ROLE_KEY" not in server_env
    assert "INGEST_EMBEDDING_DIM" not in server_env


def test_passed_env_reaches_the_job(spawner: RecordingSpawner) -> None:
    async def main() -> ChildOutcome:
        cfg = config(spawner, extra_env={**WORKER_ENV, "INGEST_EMBEDDING_DIM": "32"})
        return await run(cfg, text_job("z1"))

    assert asyncio.run(main()).result["embedder"] == "hash-32"


def test_timeout_kills_a_blocked_job(spawner: RecordingSpawner, silent_server: str) -> None:
    async def main() -> ChildOutcome:
        return await run(config(spawner), url_job("z1", silent_server), timeout_s=1.0)

    outcome = asyncio.run(main())
    assert outcome.ended is EndReason.TIMEOUT
    assert outcome.signal in (signal.SIGTERM, signal.SIGKILL)
    assert not wait_gone([spawner.started[0].pid], timeout=5)


def test_stop_request_ends_a_blocked_job(spawner: RecordingSpawner, silent_server: str) -> None:
    async def main() -> ChildOutcome:
        stop = StopRequest()
        task = asyncio.create_task(run(config(spawner), url_job("z1", silent_server), stop=stop))
        await spawner.one_started.wait()
        stop.request(EndReason.CANCELLED)
        return await task

    outcome = asyncio.run(main())
    assert outcome.ended is EndReason.CANCELLED
    assert not wait_gone([spawner.started[0].pid], timeout=5)


def test_a_dead_server_gives_its_children_back_and_is_restarted(
    spawner: RecordingSpawner, silent_server: str
) -> None:
    async def main() -> tuple[ChildOutcome, ChildOutcome, int]:
        cfg = config(spawner)
        task = asyncio.create_task(run(cfg, url_job("z1", silent_server)))
        await spawner.one_started.wait()
        first = spawner.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        lost = await task
        again = await run(cfg, text_job("z2"))
        return lost, again, first

    lost, again, first = asyncio.run(main())
    # Not the job's fault: it ends as at a shutdown, so the daemon releases it unspent.
    assert lost.ended is EndReason.SHUTDOWN and lost.exit_code is None
    assert not wait_gone([spawner.started[0].pid], timeout=5), "child outlived its server"
    assert again.exit_code == 0
    assert spawner.pid not in (None, first)


MINI = """
import asyncio, json, sys
from supervisor.runner import ForkServer, RunnerConfig, StopRequest, run_child

class Spawner(ForkServer):
    async def spawn(self, spec):
        child = await super().spawn(spec)
        print("PIDS", self.pid, child.pid, flush=True)
        return child

job = {"job_id": "m", "tenant_id": "t", "data_source": {"type": "url", "url": sys.argv[1]}}
cfg = RunnerConfig(
    command=None,
    fork_server=Spawner(),
    extra_env={"INGEST_CRAWL_ALLOW_PRIVATE": "1", "INGEST_CHUNK_STORE": "none"},
)
asyncio.run(run_child(cfg, job_id="m", attempt=1, job_json=json.dumps(job).encode(),
                      timeout_s=600, stop=StopRequest()))
"""


def test_sigkill_of_the_supervisor_takes_server_and_child_along(silent_server: str) -> None:
    mini = subprocess.Popen(
        [sys.executable, "-c", MINI, silent_server],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert mini.stdout is not None
        line = mini.stdout.readline().decode()  # blocks until the child was started
        assert line.startswith("PIDS "), (line, mini.stderr.read() if mini.stderr else b"")
        server_pid, child_pid = (int(p) for p in line.split()[1:])
        # The job is running (blocked on the silent server), in its own session.
        deadline = time.monotonic() + 10
        while os.getsid(child_pid) != child_pid and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.getsid(child_pid) == child_pid
        mini.send_signal(signal.SIGKILL)
        mini.wait(timeout=10)
        assert not wait_gone([server_pid, child_pid], timeout=5), "outlived the supervisor"
    finally:
        if mini.poll() is None:
            mini.kill()
            mini.wait()


def _proc_mask(pid: int, field: str) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            bits = int(line.split()[1], 16)
            return {n + 1 for n in range(64) if bits >> n & 1}
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_children_get_fresh_signal_state_their_limits_and_cwd(
    spawner: RecordingSpawner, silent_server: str
) -> None:
    # An ignored SIGHUP (nohup) is inherited by the server; its children must not keep it.
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:

        async def main() -> tuple[set[int], set[int], set[int], int, str]:
            stop = StopRequest()
            cfg = config(spawner, limits=ResourceLimits(open_files=77))
            task = asyncio.create_task(run(cfg, url_job("z1", silent_server), stop=stop))
            await spawner.one_started.wait()
            pid = spawner.started[0].pid
            # Set-up is over once the job is inside its fetch: connected to the server.
            for _ in range(500):
                if psutil.Process(pid).net_connections(kind="tcp"):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the job never connected")
            masks = (
                _proc_mask(pid, "SigIgn"),
                _proc_mask(pid, "SigBlk"),
                _proc_mask(spawner.pid or 0, "SigIgn"),
                psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)[0],
                os.readlink(f"/proc/{pid}/cwd"),
            )
            stop.request(EndReason.CANCELLED)
            await task
            return masks

        ignored, blocked, server_ignored, nofile, cwd = asyncio.run(main())
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert signal.SIGHUP in server_ignored  # the premise: the server did inherit it
    assert ignored == {signal.SIGPIPE, signal.SIGXFSZ}  # what CPython itself ignores
    assert blocked == set()
    assert nofile == 77
    assert os.path.basename(cwd).startswith("ingest-job-")


def test_the_waiting_spare_holds_no_job_pipes_and_leads_its_session(
    spawner: RecordingSpawner,
) -> None:
    async def main() -> ChildOutcome:
        return await run(config(spawner), text_job("z1"))

    assert asyncio.run(main()).exit_code == 0
    server = psutil.Process(spawner.pid or 0)
    deadline = time.monotonic() + 5
    while True:  # the one taken is replaced: two wait again
        spares = [p for p in server.children() if p.status() != psutil.STATUS_ZOMBIE]
        if len(spares) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert len(spares) == 2
    spare = spares[0].pid
    assert spare != spawner.started[0].pid
    # The spare is forked ahead of its job and sets itself up right after fork(): its own
    # session, then only its own fds. stdin/stdout (/dev/null), the server's stderr and its
    # socket (its other end now the daemon's): no pipe of a finished job (which would keep
    # the runner waiting).
    deadline = time.monotonic() + 5
    while True:
        fds = os.listdir(f"/proc/{spare}/fd")
        leads = os.getsid(spare) == spare
        if (leads and len(fds) == 4) or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert leads
    targets = {os.readlink(f"/proc/{spare}/fd/{fd}") for fd in fds}
    assert len(fds) == 4, targets


def test_a_dead_server_takes_a_spawned_command_along(spawner: RecordingSpawner) -> None:
    """A command is started by posix_spawn (no parent-death signal): when its server dies,
    its run kills the command's group."""

    async def main() -> ChildOutcome:
        task = asyncio.create_task(run(config(spawner, command=child_cmd("sleep_forever.py")), b""))
        await spawner.one_started.wait()
        assert spawner.pid is not None
        os.kill(spawner.pid, signal.SIGKILL)
        return await task

    lost = asyncio.run(main())
    assert lost.ended is EndReason.SHUTDOWN and lost.exit_code is None
    assert not wait_gone([spawner.started[0].pid], timeout=5), "command outlived its server"


def _job_processes_after(job_id: str, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (found := job_processes(job_id)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def test_a_server_that_stops_answering_fails_only_that_start_and_kills_a_late_child(
    tmp_path: Path,
) -> None:
    """A stopped server (SIGSTOP) holds a start until the timeout: that start fails, the
    server with a running child is kept, and the child it starts once it runs again,
    after its caller gave up, is killed at once."""
    # Silent: a child that wrote to its closed stdout would die of SIGPIPE by itself.
    quiet = (sys.executable, "-S", "-c", "import time; time.sleep(60)")

    def spec(argv: tuple[str, ...], job_id: str) -> SpawnSpec:
        env = {"PATH": os.defpath, "INGEST_JOB_ID": job_id}
        return SpawnSpec(argv, env, str(tmp_path))

    def close(child: SpawnedChild) -> None:
        for fd in (child.stdin_fd, child.stdout_fd, child.stderr_fd):
            os.close(fd)

    server = ForkServer(spare_timeout_s=0.5, spares=0)

    async def main() -> list[psutil.Process]:
        running = await server.spawn(spec(quiet, "keeps-running"))
        pid = server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(ForkServerError, match="did not answer in time"):
                await server.spawn(spec(quiet, "late-start"))
        finally:
            os.kill(pid, signal.SIGCONT)
        # Answers come in order: once a later start is answered, so was the late one.
        after = await server.spawn(spec((sys.executable, "-S", "-c", "pass"), "after"))
        assert (await after.exited).exit_code == 0
        assert server.pid == pid, "a server with a running child is not restarted"
        left = await asyncio.to_thread(_job_processes_after, "late-start", 5.0)
        os.killpg(running.pid, signal.SIGKILL)
        await running.exited
        close(running)
        close(after)
        return left

    try:
        assert asyncio.run(main()) == [], "the late child was left running"
    finally:
        server.close()


def test_a_command_only_server_keeps_no_spares_and_still_forks_one_when_needed() -> None:
    spawner = RecordingSpawner()
    spawner.start(spares=0)

    async def main() -> tuple[ChildOutcome, list[psutil.Process], ChildOutcome]:
        command = await run(config(spawner, command=child_cmd("exit_code.py", "0")), b"{}")
        waiting = [
            p
            for p in psutil.Process(spawner.pid or 0).children()
            if p.status() != psutil.STATUS_ZOMBIE
        ]
        builtin = await run(config(spawner), text_job("z1"))
        return command, waiting, builtin

    try:
        command, waiting, builtin = asyncio.run(main())
    finally:
        spawner.close()
    assert command.exit_code == 0, command.error
    assert waiting == []
    assert builtin.exit_code == 0, builtin.error


def test_a_start_held_by_a_stopped_server_is_the_hosts_fault_not_the_jobs() -> None:
    """A child under the daemon's user can stop its fork server again and again, faster
    than the daemon continues it: starts beside it time out. That is no fault of the jobs
    being started: their outcome says so (`host_fault`), and the daemon gives each such
    job back to the queue without spending an attempt, a bounded number of times."""
    server = ForkServer(spare_timeout_s=0.5, spares=0)
    attacking = threading.Event()

    def attack(pid: int) -> None:
        while attacking.is_set():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGSTOP)
            time.sleep(0.001)

    async def main() -> ChildOutcome:
        server.start()
        pid = server.pid
        assert pid is not None
        attacking.set()
        attacker = threading.Thread(target=attack, args=(pid,))
        attacker.start()
        try:
            return await run_child(
                fast_config((sys.executable, "-S", "-c", "pass"), fork_server=server),
                job_id="held-start",
                attempt=1,
                job_json=b"{}",
                timeout_s=10,
                stop=StopRequest(),
            )
        finally:
            attacking.clear()
            attacker.join()
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGCONT)

    try:
        outcome = asyncio.run(main())
    finally:
        server.close()
    assert outcome.ended is EndReason.START_FAILED
    assert "did not answer in time" in (outcome.error or ""), outcome.error
    assert outcome.host_fault


# A daemon whose end of the socket goes away with a message of the server's still unread
# there (as when it is killed): the server's next read fails with ECONNRESET, not EOF.
LEAVES_UNREAD = """
import select
from supervisor.runner import ForkServer
spawner = ForkServer(spares=1)
spawner.start()
server = spawner._server
ready, _, _ = select.select([server.sock], [], [], 10)  # the spare's notice, left unread
assert ready, "the fork server sent nothing"
server.sock.close()
print(server.proc.wait(timeout=10), flush=True)
"""


def test_a_server_whose_daemon_went_away_mid_message_ends_quietly() -> None:
    """The daemon's death is the normal end of a fork server: it ends its jobs and exits
    0, with no traceback in the journal for an operator to chase."""
    done = subprocess.run(
        [sys.executable, "-c", LEAVES_UNREAD],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "0", done
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("served_before", [True, False], ids=["served-before", "never-served"])
@pytest.mark.parametrize("builtin", [False, True], ids=["command", "spare"])
def test_a_start_the_server_died_under_is_the_hosts_fault_not_the_jobs(
    builtin: bool, served_before: bool
) -> None:
    """The server is killed while a start waits on it (its answer, or a spare): the job
    never ran, so its outcome says the host failed (`host_fault`: the daemon gives it back
    without spending an attempt), and nothing that server may have started is left. A
    server that dies before it ever served a start is a broken deploy: a plain start
    failure, which shows."""
    server = ForkServer(spare_timeout_s=10.0, spares=0)
    command = None if builtin else (sys.executable, "-S", "-c", "pass")
    cfg = fast_config(command, fork_server=server, extra_env=WORKER_ENV)

    async def start(job_id: str) -> ChildOutcome:
        return await run_child(
            cfg,
            job_id=job_id,
            attempt=1,
            job_json=text_job(job_id),
            timeout_s=10,
            stop=StopRequest(),
        )

    async def main() -> ChildOutcome:
        server.start()
        if served_before:
            first = await start("served-first")
            assert first.exit_code == 0, first.error
        pid = server.pid
        process = server._server
        assert pid is not None and process is not None
        if served_before and builtin:
            await poll(lambda: bool(process.spares), 10, "the spare made after the first")
        os.kill(pid, signal.SIGSTOP)  # holds the start, as a server about to die would
        if served_before and builtin:  # without its spare, the start waits on the server
            process.spares.popleft()[1].close()
        started = asyncio.create_task(start("died-under-start"))
        await poll(lambda: bool(process.answers or process.waiters), 10, "the start waiting")
        os.kill(pid, signal.SIGKILL)
        return await started

    try:
        outcome = asyncio.run(main())
    finally:
        server.close()
    assert outcome.ended is EndReason.START_FAILED, outcome
    assert outcome.host_fault is served_before, outcome.error
    assert job_processes("died-under-start") == []
