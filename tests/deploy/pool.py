"""Running the shipped supervisord.conf with Debian's supervisord, for the pool tests."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
from redis.asyncio import Redis

from supervisor.queue.jobqueue import JobQueue
from tests import waiting

from .units import REPO_ROOT

SUPERVISORD = "/usr/bin/supervisord"
SUPERVISORCTL = "/usr/bin/supervisorctl"
CONF = REPO_ROOT / "supervisord.conf"
SLOW_CHILD = Path(__file__).with_name("slow_child.py")
T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, what: str) -> T:
    """Conditions here run supervisorctl or scrape ports: poll them less and less often."""
    return waiting.wait_until(condition, timeout_s, what, backoff=1.5)


def wait_for_value(
    fetch: Callable[[], T], accept: Callable[[T], bool], timeout_s: float, what: str
) -> T:
    """Poll `fetch` until `accept` holds for what it returned; return that value."""
    last: list[T] = []

    def check() -> bool:
        value = fetch()
        last[:] = [value]
        return accept(value)

    try:
        wait_until(check, timeout_s, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last value: {last[0]!r}") from None
    return last[0]


def free_port_block(size: int) -> int:
    """A base port such that base+1 .. base+size are all free right now.

    Chosen above the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default):
    a port in it can be taken by any outgoing connection of another test between this
    probe and the daemon's bind."""
    for _ in range(200):
        base = random.randint(61000, 65535 - size - 1)
        try:
            for port in range(base + 1, base + size + 1):
                with socket.socket() as probe:
                    probe.bind(("0.0.0.0", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free block of ports")


def run_queue(redis_url: str, queue: str, call: Callable[[JobQueue], Coroutine[Any, Any, T]]) -> T:
    async def go() -> T:
        client = Redis.from_url(redis_url)
        try:
            return await call(JobQueue(client, queue))
        finally:
            await client.aclose()

    return asyncio.run(go())


def children_of_test(marker: str) -> list[psutil.Process]:
    """Every live process running the test child for this test's queue."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if str(SLOW_CHILD) in cmd and marker in cmd and proc.info["status"] != "zombie":
            found.append(proc)
    return found


@dataclass
class Pool:
    root: Path
    env: dict[str, str]
    queue: str
    metrics_base: int
    api_port: int
    proc: subprocess.Popen[bytes] | None = None
    state_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.state_dir = self.root / "state"

    @classmethod
    def create(cls, root: Path, redis_url: str, queue: str, numprocs: int) -> Pool:
        for sub in ("run", "log", "state", "children"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        venv = Path(sys.executable).parent.parent
        metrics_base = free_port_block(numprocs)
        api_port = free_port_block(1) + 1
        child = [sys.executable, str(SLOW_CHILD), queue, str(root / "children")]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "INGEST_VENV": str(venv),
            "INGEST_NUMPROCS": str(numprocs),
            "INGEST_USER": psutil.Process().username(),
            "INGEST_RUN_DIR": str(root / "run"),
            "INGEST_LOG_DIR": str(root / "log"),
            "INGEST_STATE_DIR": str(root / "state"),
            "REDIS_URL": redis_url,
            "INGEST_QUEUE": queue,
            "INGEST_CONCURRENCY": "2",
            "INGEST_SHUTDOWN_GRACE_SECONDS": "1",
            "INGEST_KILL_GRACE_SECONDS": "1",
            "INGEST_LEASE_SECONDS": "30",
            "INGEST_HEARTBEAT_TTL": "3",
            "INGEST_METRICS_PORT": str(metrics_base),
            "INGEST_METRICS_HOST": "127.0.0.1",
            "INGEST_STATUS_BACKEND": "none",
            "INGEST_WORKER_COMMAND": shlex.join(child),
            "INGEST_API_HOST": "127.0.0.1",
            "INGEST_API_PORT": str(api_port),
            "INGEST_API_WORKERS": "1",
        }
        return cls(root, env, queue, metrics_base, api_port)

    def start(self) -> None:
        out = (self.root / "log" / "supervisord.stdout").open("wb")
        self.proc = subprocess.Popen(
            [SUPERVISORD, "-n", "-c", str(CONF)],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        wait_until(
            lambda: (self.root / "run" / "supervisor.sock").exists() or self._died(),
            30,
            "supervisord's control socket",
        )
        assert self.proc.poll() is None, self.supervisord_log()

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def ctl(self, *args: str, timeout_s: float = 120) -> str:
        result = subprocess.run(
            [SUPERVISORCTL, "-c", str(CONF), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        return result.stdout + result.stderr

    def states(self) -> dict[str, str]:
        """Program name -> state (RUNNING, STOPPED, FATAL, ...)."""
        out = {}
        for line in self.ctl("status").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].isupper():
                out[parts[0]] = parts[1]
        return out

    def supervisord_log(self) -> str:
        path = self.root / "log" / "supervisord.log"
        return path.read_text() if path.exists() else ""

    def program_log(self, name: str) -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop_exit_statuses(self) -> dict[str, str]:
        """Process name -> how supervisord saw it stop, e.g. 'exit status 0'."""
        return dict(re.findall(r"stopped: (\S+) \(([^)]*)\)", self.supervisord_log()))

    def shutdown(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.ctl("shutdown", timeout_s=30)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
