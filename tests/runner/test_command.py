"""default_command: the operator's overrides, and a fast default that still imports the worker."""

from __future__ import annotations

import subprocess
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


def test_own_interpreter_default_skips_site_but_still_finds_the_package() -> None:
    cmd = default_command(sys.executable, None, None)
    assert cmd[:2] == (sys.executable, "-S")
    # Same bootstrap, but import the package instead of running it as a job.
    probe = cmd[3].replace(
        "import ingest_worker.__main__",
        "import ingest_worker, psutil;print(ingest_worker.__path__[0])",
    )
    assert probe != cmd[3]
    out = subprocess.run(
        [sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin"}, cwd="/",
    )
    assert out.stdout.strip().endswith("ingest_worker")
