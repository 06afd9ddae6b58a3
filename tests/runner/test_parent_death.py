"""No child outlives its supervisor, even one killed with SIGKILL: the fork server learns of
the supervisor's death and kills every job's session before it exits."""

from __future__ import annotations

import os
import signal

from tests.runner.conftest import child_cmd, mini_running, wait_gone


def test_children_die_when_the_supervisor_is_sigkilled() -> None:
    with mini_running(*child_cmd("sleep_forever.py")) as (mini, child_pid):
        os.kill(child_pid, 0)  # running
        mini.send_signal(signal.SIGKILL)
        mini.wait(timeout=10)
        assert not wait_gone([child_pid], timeout=5), "child outlived its supervisor"
