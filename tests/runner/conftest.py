"""Runner tests: real child processes from the zoo in children/, short grace and timeouts."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor.runner import FORK_SERVER, ChildOutcome, RunnerConfig, StopRequest, run_child
from supervisor.runner.containment import ORPHANS
from supervisor.runner.workdir import removals_finished

CHILDREN = Path(__file__).resolve().parent / "children"


def left_behind() -> list[int]:
    """Live descendants of the test process, but the fork server and its waiting spare."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or proc.pid == FORK_SERVER.pid:
                continue
            if proc.ppid() == FORK_SERVER.pid and proc.name() == "ingest-spare":
                continue
            found.append(proc.pid)
        except psutil.Error:
            continue
    return found


@contextlib.contextmanager
def mini_running(
    *child: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """children/mini_supervisor.py running `child`, and the child's pid once the child has
    reported it (its first PROGRESS message ends with it); killed at the end if still up."""
    mini = subprocess.Popen(
        [sys.executable, str(CHILDREN / "mini_supervisor.py"), *child],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert mini.stdout is not None
        line = mini.stdout.readline().decode()  # blocks until the child reported its pid
        assert line.startswith("CHILD "), (line, mini.stderr.read() if mini.stderr else b"")
        yield mini, int(line.split()[1])
    finally:
        if mini.poll() is None:
            mini.kill()
            mini.wait()


def child_cmd(script: str, *args: str) -> tuple[str, ...]:
    # -S: the zoo needs only the standard library, and starts three times faster.
    return (sys.executable, "-S", str(CHILDREN / script), *args)


def fast_config(command: tuple[str, ...] | None, **overrides: Any) -> RunnerConfig:
    base = RunnerConfig(
        command=command,
        kill_grace_s=0.5,
        drain_timeout_s=0.5,
        progress_interval_s=0.05,
        rss_sample_interval_s=0.05,
    )
    return replace(base, **overrides)


def job_processes(job_id: str) -> list[psutil.Process]:
    """Every live process whose environment says it belongs to this job."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("INGEST_JOB_ID") == job_id:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Pids still running (not zombie) after polling up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


RunFn = Callable[..., Awaitable[ChildOutcome]]


@pytest.fixture
def run() -> Iterator[RunFn]:
    """Runs a child under a unique job id; afterwards no process of that job may be left."""
    job_ids: list[str] = []

    async def _run(
        config: RunnerConfig,
        *,
        job_json: bytes = b'{"job_id": "j"}',
        timeout_s: float = 30.0,
        stop: StopRequest | None = None,
        on_progress: Callable[[float, str | None], None] | None = None,
        job_id: str | None = None,
        secrets: Sequence[str] = (),
    ) -> ChildOutcome:
        jid = job_id or f"rt-{uuid.uuid4().hex[:10]}"
        job_ids.append(jid)
        outcome = await run_child(
            config,
            job_id=jid,
            attempt=1,
            job_json=job_json,
            timeout_s=timeout_s,
            stop=stop or StopRequest(),
            on_progress=on_progress,
            secrets=secrets,
        )
        # A directory left full is removed in the background: done before tests look.
        assert await removals_finished(60.0)
        return outcome

    yield _run
    # One still dying may be seen (a writer to the closed pipe, ending on EPIPE): a stray
    # never goes by itself, so waiting for the job's processes to go loses no failure.
    left = wait_gone([p.pid for jid in job_ids for p in job_processes(jid)], timeout=2.0)
    assert not left, f"processes of the job left behind: {left}"
    own = wait_gone(left_behind(), timeout=2.0)  # a job's last fork may still be reaping
    assert not own, f"descendants of the test process left behind: {own}"


@pytest.fixture
def subreaper() -> Iterator[None]:
    """This test process adopts orphans for the test's duration, as the daemon does (but
    kills only orphans whose environment names a run: pytest has children of its own)."""
    assert ORPHANS.become_subreaper(kill_unattributed=False)
    yield
    ORPHANS.stop_being_subreaper()
