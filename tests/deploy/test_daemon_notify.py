"""The daemon speaks the notify protocol to a socket the test owns, as systemd would:
READY=1, STATUS=, WATCHDOG=1 at half the interval, STOPPING=1 and EXTEND_TIMEOUT_USEC= on
SIGTERM; its children never see NOTIFY_SOCKET or the watchdog variables."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import NotifyListener
from .pool import SLOW_CHILD, free_port_block, run_queue, wait_until

DAEMON = Path(sys.executable).with_name("ingest-supervisor")


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    # A filesystem socket, as systemd's /run/systemd/notify; abstract ones are covered by
    # the unit tests of sdnotify.
    got = NotifyListener()
    yield got
    got.close()


def _ready(listener: NotifyListener, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"daemon exited {proc.returncode}:\n{log.read_text()[-3000:]}")
    listener.receive(0.2)
    return listener.count("READY=1") > 0


def test_ready_watchdog_status_and_stopping(
    listener: NotifyListener, redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    children = tmp_path / "children"
    children.mkdir()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "NOTIFY_SOCKET": listener.env_value,
        "WATCHDOG_USEC": "1000000",
        "REDIS_URL": redis_url,
        "INGEST_QUEUE": queue_name,
        "INGEST_CONCURRENCY": "1",
        "INGEST_SHUTDOWN_GRACE_SECONDS": "1",
        "INGEST_KILL_GRACE_SECONDS": "1",
        "INGEST_METRICS_PORT": str(free_port_block(1)),
        "INGEST_METRICS_HOST": "127.0.0.1",
        "INGEST_INSTANCE": "1",
        "INGEST_STATUS_BACKEND": "none",
        "INGEST_WORKER_COMMAND": shlex.join(
            [sys.executable, str(SLOW_CHILD), queue_name, str(children)]
        ),
    }
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen([str(DAEMON)], env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_until(
            lambda: _ready(listener, proc, tmp_path / "daemon.log"), 30, "READY=1 from the daemon"
        )
        listener.wait_for_prefix("STATUS=", 10)

        # Pings keep coming at about half the 1 s interval; counting messages, not time.
        listener.wait_for_field(
            lambda f: f == "WATCHDOG=1" and listener.count("WATCHDOG=1") >= 3,
            "three WATCHDOG=1 pings",
            30,
        )

        # A job runs; its child must not have inherited the notify or watchdog variables.
        run_queue(
            redis_url,
            queue_name,
            lambda q: q.enqueue(
                {
                    "job_id": "notify-1",
                    "tenant_id": "t",
                    "data_source": {"type": "text", "text": "x"},
                    "metadata": {"first_run_s": 120},
                }
            ),
        )
        env_dump = children / "notify-1.env.json"
        wait_until(env_dump.exists, 30, "the child to start")
        inherited = set(json.loads(env_dump.read_text()))
        assert not inherited & {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}
        listener.wait_for_field(
            lambda f: f.startswith("STATUS=") and "1/1" in f, "STATUS= with a busy slot", 30
        )

        # SIGTERM mid-job: STOPPING=1, more time asked for the drain, a clean exit.
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1", 30)
        extend = listener.wait_for_prefix("EXTEND_TIMEOUT_USEC=", 10)
        assert int(extend.split("=", 1)[1]) > 0
        assert proc.wait(timeout=60) == 0
        # The long job was released, not lost, and its attempt not spent.
        job = run_queue(redis_url, queue_name, lambda q: q.get("notify-1"))
        assert job is not None
        assert (job.state.value, job.attempt) == ("waiting", 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        print((tmp_path / "daemon.log").read_text()[-3000:])
