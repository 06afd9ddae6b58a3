"""default_command: the operator's overrides, else the built-in worker."""

from __future__ import annotations

import sys

from supervisor.runner import default_command


def test_worker_command_replaces_everything_and_is_split_like_a_shell() -> None:
    cmd = default_command(sys.executable, "/x/worker.py", "/opt/bin/node 'my worker.js' --fast")
    assert cmd == ("/opt/bin/node", "my worker.js", "--fast")


def test_worker_path_runs_the_script_with_the_interpreter() -> None:
    assert default_command("/usr/bin/python3", "/srv/worker.py", None) == (
        "/usr/bin/python3",
        "/srv/worker.py",
    )


def test_other_interpreter_gets_plain_module_invocation() -> None:
    assert default_command("/usr/bin/python3", None, None) == (
        "/usr/bin/python3",
        "-m",
        "ingest_worker",
    )


def test_own_interpreter_default_is_the_built_in_worker() -> None:
    """None: the fork server's child runs ingest_worker in place (no new interpreter)."""
    assert default_command(sys.executable, None, None) is None
