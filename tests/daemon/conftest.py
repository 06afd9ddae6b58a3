"""Real daemon processes for tests: start, wait until ready, signal, collect logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from supervisor.runner.workdir import JOBS_ROOT_PREFIX
from tests.conftest import REDIS_URL
from tests.waiting import wait_until

CHILD = Path(__file__).resolve().parent / "children" / "job.py"


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    queue: str
    redis_url: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def job_dirs_left(self) -> list[str]:
        """Job working directories of this daemon that still exist (in its own directory
        for them, and anything else in its TMPDIR)."""
        left: list[str] = []
        for entry in Path(self.extra["TMPDIR"]).iterdir():
            if entry.name.startswith(JOBS_ROOT_PREFIX) and entry.is_dir():
                left += os.listdir(entry)
            else:
                left.append(entry.name)
        return left

    def jobs_root(self) -> Path:
        """The daemon's own directory for its job directories."""
        found = list(Path(self.extra["TMPDIR"]).glob(f"{JOBS_ROOT_PREFIX}*"))
        assert len(found) == 1, found
        return found[0]

    def wait_ready(self, timeout: float = 20) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited early ({self.proc.returncode}):\n{self.log()}")
            return " ready: worker " in self.log()

        wait_until(ready, timeout, "daemon ready")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"daemon did not exit in {timeout}s:\n{self.log()}") from None


@pytest.fixture
def run_log(tmp_path: Path) -> Path:
    return tmp_path / "runs.jsonl"


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def start_daemon(
    tmp_path: Path, queue_name: str, run_log: Path
) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(
        redis_url: str = REDIS_URL, prefix: tuple[str, ...] = (), **env: str
    ) -> DaemonProcess:
        """`prefix`: a command the daemon is started under (such as setpriv and its flags)."""
        n = len(started)
        log_path = tmp_path / f"daemon-{n}.log"
        job_dirs = tmp_path / f"job-dirs-{n}"  # where this daemon's children get their cwd
        job_dirs.mkdir()
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "REDIS_URL": redis_url,
            "INGEST_QUEUE": queue_name,
            "INGEST_WORKER_COMMAND": f"{sys.executable} {CHILD}",
            "INGEST_CHILD_ENV": "TEST_RUN_LOG",
            "TEST_RUN_LOG": str(run_log),
            "INGEST_METRICS_PORT": "0",
            "INGEST_STATUS_BACKEND": "none",
            "INGEST_LEASE_SECONDS": "6",
            "INGEST_KILL_GRACE_SECONDS": "0.5",
            "INGEST_SHUTDOWN_GRACE_SECONDS": "1",
            "INGEST_BACKOFF_SECONDS": "0.1",
            "INGEST_HEARTBEAT_TTL": "3",
            "INGEST_INSTANCE": str(n + 1),
            "TMPDIR": str(job_dirs),
            **env,
        }
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "supervisor"],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        daemon = DaemonProcess(proc, log_path, queue_name, redis_url, full_env)
        started.append(daemon)
        return daemon

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(10)


def job(job_id: str, **meta: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "job_id": job_id,
        "tenant_id": "tenant-a",
        "data_source": {"type": "text", "text": "hello"},
    }
    for key in ("timeout_s", "max_attempts", "priority"):
        if key in meta:
            payload[key] = meta.pop(key)
    if meta:
        payload["metadata"] = meta
    return payload


class SyncQueue:
    """The async protocol driven from synchronous tests (each call on a fresh loop)."""

    def __init__(self, queue: str, redis_url: str = REDIS_URL) -> None:
        self.queue = queue
        self.redis_url = redis_url

    def __getattr__(self, name: str) -> Callable[..., Any]:
        from redis.asyncio import Redis

        from supervisor.queue.jobqueue import JobQueue

        def call(*args: Any, **kwargs: Any) -> Any:
            async def go() -> Any:
                client = Redis.from_url(self.redis_url)
                try:
                    return await getattr(JobQueue(client, self.queue), name)(*args, **kwargs)
                finally:
                    await client.aclose()

            return asyncio.run(go())

        return call


@pytest.fixture
def q(queue_name: str) -> SyncQueue:
    return SyncQueue(queue_name)


@pytest.fixture
def raw_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()
