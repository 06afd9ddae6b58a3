"""A real `ingest-api` process (uvicorn) on a free port, and helpers to drive it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.redis_server import PrivateRedis, free_port

TOKEN = "test-token-0123456789"


class ApiServer:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def queue(self) -> str:
        return self.env["INGEST_QUEUE"]

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REDIS_"))}
        env.update(self.env)
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api", "--port", str(self.port), "--log-level", "warning"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingest-api exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("ingest-api did not answer /health/live")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def client(self, token: str | None = TOKEN, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, **kw)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def delete_queue(redis_url: str, queue: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"ingest:{{{queue}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


ServerFactory = Callable[..., ApiServer]


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start an API process with extra environment; every one started is stopped afterwards."""
    started: list[ApiServer] = []

    def start(**env: str) -> ApiServer:
        full = {
            "REDIS_URL": REDIS_URL,
            "INGEST_QUEUE": f"t-{uuid.uuid4().hex[:12]}",
            "INGEST_API_TOKEN": TOKEN,
            "INGEST_STATUS_BACKEND": "none",
            **env,
        }
        server = ApiServer(full, tmp_path / f"api-{len(started)}.log")
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
        if server.env["REDIS_URL"] == REDIS_URL:
            delete_queue(REDIS_URL, server.queue)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One API process shared by a module's tests (each uses its own job ids)."""
    env = {
        "REDIS_URL": REDIS_URL,
        "INGEST_QUEUE": f"t-{uuid.uuid4().hex[:12]}",
        "INGEST_API_TOKEN": TOKEN,
        "INGEST_STATUS_BACKEND": "none",
        "INGEST_SECRET_KEYS": "custom_secret",
    }
    server = ApiServer(env, tmp_path_factory.mktemp("api") / "api.log")
    server.start()
    yield server
    server.stop()
    delete_queue(REDIS_URL, server.queue)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server only this test uses, so it can be stopped or paused."""
    server = PrivateRedis(tmp_path / "redis", persistent=False)
    server.start()
    yield server
    server.close()


def job(job_id: str | None = None, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "job_id": f"j-{uuid.uuid4().hex[:10]}" if job_id is None else job_id,
        "tenant_id": "tenant-a",
        "data_source": {"type": "url", "url": "https://example.com/docs"},
    }
    payload.update(extra)
    return payload


def eventually(
    probe: Callable[[], Any], accept: Callable[[Any], bool] = bool, timeout_s: float = 10.0
) -> Any:
    """Poll `probe` until `accept` holds; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s; last value {value!r}")
        time.sleep(0.02)
