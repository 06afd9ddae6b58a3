"""The README's test command on a machine that lacks something: scripts/test installs it
(as root, through scripts/ensure-services) or stops at once with the one command that will,
and .ci/run is that same command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


@pytest.fixture
def path_without() -> Iterator[Callable[..., str]]:
    """A PATH holding every system command except the named ones: a machine without them.
    World-readable, so an unprivileged user can run from it too."""
    made: list[str] = []

    def make(*hidden: str) -> str:
        bin_dir = tempfile.mkdtemp(prefix="ensure-services-path-")
        made.append(bin_dir)
        os.chmod(bin_dir, 0o755)
        for d in SYSTEM_DIRS:
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                target = Path(bin_dir) / name
                if name not in hidden and not target.exists():
                    target.symlink_to(os.path.join(d, name))
        return bin_dir

    yield make
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


def unprivileged() -> list[str]:
    """Run as `nobody` when we are root; as ourselves otherwise."""
    return (
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.getuid() == 0 else []
    )


def test_readme_test_command_stops_at_once_with_the_fix(path_without: Callable[..., str]) -> None:
    if os.getuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root")
    env = {"PATH": path_without("promtool"), "HOME": "/tmp", "LANG": "C.UTF-8"}
    r = subprocess.run(
        [*unprivileged(), str(REPO_ROOT / "scripts" / "test")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    # Nothing else ran: no venv setup, no lint, no types, no tests.
    assert r.stdout == "", r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "prometheus" in lines[0]
    assert lines[0].endswith(f"run: sudo {REPO_ROOT}/scripts/ensure-services"), lines[0]


def test_check_names_every_missing_package(path_without: Callable[..., str]) -> None:
    env = {"PATH": path_without("promtool", "supervisord"), "HOME": "/tmp"}
    script = str(REPO_ROOT / "scripts" / "ensure-services")
    r = subprocess.run([script, "--check"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "missing Debian packages: supervisor prometheus." in r.stderr, r.stderr
    # On this machine (the suite runs after scripts/ensure-services) nothing is missing.
    ready = subprocess.run([script, "--check"], capture_output=True, text=True, timeout=60)
    assert (ready.returncode, ready.stderr) == (0, ""), ready.stderr


def test_ci_runs_the_readme_command_and_the_install_logic_is_written_once() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "exec scripts/test" in ci and "export CI=true" in ci
    test = (REPO_ROOT / "scripts" / "test").read_text()
    assert test.index("scripts/ensure-services") < test.index("scripts/setup")
    installers = [
        p.relative_to(REPO_ROOT).as_posix()
        for p in [*(REPO_ROOT / "scripts").iterdir(), REPO_ROOT / ".ci" / "run"]
        if re.search(r"^[^#\n]*\bapt-get\b[^#\n]*\binstall\b", p.read_text(), re.M)
    ]
    assert installers == ["scripts/ensure-services"]
