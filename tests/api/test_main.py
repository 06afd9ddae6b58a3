"""`ingest-api`: host, port and workers from the environment, flags over them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import httpx
import psutil

from tests.conftest import REDIS_URL
from tests.redis_server import free_port


def test_env_port_and_workers(tmp_path: object) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INGEST_")},
        "REDIS_URL": REDIS_URL,
        "INGEST_API_HOST": "127.0.0.1",
        "INGEST_API_PORT": str(port),
        "INGEST_API_WORKERS": "2",
        "INGEST_STATUS_BACKEND": "none",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None, "ingest-api exited"
            assert time.monotonic() < deadline, "ingest-api never answered"
            time.sleep(0.05)
        # uvicorn's supervisor plus two worker processes serving the app.
        deadline = time.monotonic() + 30
        while len(psutil.Process(proc.pid).children()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0


def test_bad_setting_fails_fast_naming_the_variable() -> None:
    env = {**os.environ, "INGEST_HEALTH_MAX_BACKLOG": "lots"}
    out = subprocess.run(
        [sys.executable, "-m", "api", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "INGEST_HEALTH_MAX_BACKLOG" in out.stderr
