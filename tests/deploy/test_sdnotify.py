"""The notify protocol against a real AF_UNIX datagram socket (no systemd needed)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from supervisor.sdnotify import SystemdNotifier, scrub_env

from .conftest import NotifyListener


def test_messages_reach_the_socket(notify_listener: NotifyListener) -> None:
    env = {"NOTIFY_SOCKET": notify_listener.env_value}
    notifier = SystemdNotifier.from_environ(env)
    assert notifier.enabled

    assert notifier.ready()
    assert notify_listener.receive(2) == ["READY=1"]
    assert notifier.status("1/2 slots busy")
    assert notify_listener.receive(2) == ["STATUS=1/2 slots busy"]
    assert notifier.watchdog()
    assert notify_listener.receive(2) == ["WATCHDOG=1"]
    assert notifier.stopping()
    assert notify_listener.receive(2) == ["STOPPING=1"]
    assert notifier.extend_timeout(45.5)
    assert notify_listener.receive(2) == ["EXTEND_TIMEOUT_USEC=45500000"]
    assert notifier.ready(status="idle")
    assert notify_listener.receive(2) == ["READY=1", "STATUS=idle"]
    notifier.close()


def test_a_newline_in_a_status_cannot_smuggle_a_field(notify_listener: NotifyListener) -> None:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": notify_listener.env_value})
    notifier.status("busy\nREADY=1")
    assert notify_listener.receive(2) == ["STATUS=busy READY=1"]


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = SystemdNotifier.from_environ({})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s() is None
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert not notifier.extend_timeout(1)


def test_from_environ_removes_the_variables_so_children_cannot_inherit_them() -> None:
    env = {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "4000000",
        "WATCHDOG_PID": str(os.getpid()),
        "PATH": "/usr/bin",
    }
    notifier = SystemdNotifier.from_environ(env)
    assert env == {"PATH": "/usr/bin"}
    assert notifier.enabled
    assert notifier.watchdog_interval_s() == 4.0

    kept = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1"}
    SystemdNotifier.from_environ(kept, unset_environment=False)
    assert kept == {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1"}


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("2000000", None, 2.0),
        ("1000000", "self", 1.0),
        ("1000000", "1", None),  # armed for another process
        ("0", None, None),
        ("soon", None, None),
        ("", None, None),
    ],
)
def test_watchdog_interval(usec: str, pid: str | None, expected: float | None) -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = str(os.getpid()) if pid == "self" else pid
    assert SystemdNotifier.from_environ(env).watchdog_interval_s() == expected


def test_no_watchdog_without_a_socket() -> None:
    env = {"WATCHDOG_USEC": "1000000"}
    assert SystemdNotifier.from_environ(env).watchdog_interval_s() is None


def test_a_send_failure_never_raises_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "/nonexistent/dir/notify"})
    with caplog.at_level(logging.DEBUG, logger="supervisor.sdnotify"):
        for _ in range(5):
            assert not notifier.ready()
            assert not notifier.watchdog()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "notify failed" in warnings[0].getMessage()


def test_the_manager_going_away_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    listener = NotifyListener()
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": listener.env_value})
    assert notifier.ready()
    listener.close()
    with caplog.at_level(logging.WARNING, logger="supervisor.sdnotify"):
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    assert len(caplog.records) == 1


def test_an_unsupported_address_is_ignored() -> None:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert not notifier.ready()


def test_scrub_env_drops_notify_watchdog_and_socket_activation() -> None:
    env = {
        "NOTIFY_SOCKET": "@x",
        "WATCHDOG_USEC": "1",
        "WATCHDOG_PID": "2",
        "LISTEN_FDS": "1",
        "LISTEN_PID": "2",
        "LISTEN_FDNAMES": "api",
        "PATH": "/usr/bin",
        "INGEST_JOB_ID": "j1",
    }
    assert scrub_env(env) == {"PATH": "/usr/bin", "INGEST_JOB_ID": "j1"}
    assert "NOTIFY_SOCKET" in env  # a copy, the input is untouched


def test_a_full_receive_buffer_does_not_block(notify_listener: NotifyListener) -> None:
    # Nobody reads the socket: sends fail fast (EAGAIN) instead of wedging the caller.
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": notify_listener.env_value})
    results = [notifier.status("x" * 4000) for _ in range(2000)]
    assert results[0]
    assert not all(results)


def test_the_os_environment_is_scrubbed_for_later_subprocesses(
    notify_listener: NotifyListener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_listener.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    notifier = SystemdNotifier.from_environ()
    assert notifier.enabled
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; print(sorted(k for k in os.environ "
            "if k in ('NOTIFY_SOCKET', 'WATCHDOG_USEC')))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip() == "[]"
