"""No child outlives its supervisor, even one killed with SIGKILL: the fork server dies with
the supervisor, and the child with the fork server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.runner.conftest import CHILDREN, child_cmd, wait_gone


def test_children_die_when_the_supervisor_is_sigkilled() -> None:
    mini = subprocess.Popen(
        [sys.executable, str(CHILDREN / "mini_supervisor.py"), *child_cmd("sleep_forever.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert mini.stdout is not None
        line = mini.stdout.readline().decode()  # blocks until the child reported its pid
        assert line.startswith("CHILD "), (line, mini.stderr.read() if mini.stderr else b"")
        child_pid = int(line.split()[1])
        os.kill(child_pid, 0)  # running
        mini.send_signal(signal.SIGKILL)
        mini.wait(timeout=10)
        assert not wait_gone([child_pid], timeout=5), "child outlived its supervisor"
    finally:
        if mini.poll() is None:
            mini.kill()
            mini.wait()
