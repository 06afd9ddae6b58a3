"""The import name `supervisor` must be ours, never PyPI's supervisord (BRIEF.md naming hazard)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import supervisor

REPO = Path(__file__).resolve().parent.parent


def test_supervisor_package_is_this_repository() -> None:
    assert Path(supervisor.__file__).resolve().is_relative_to(REPO)


def test_pypi_supervisor_distribution_is_not_installed() -> None:
    names = {
        (dist.metadata["Name"] or "").lower() for dist in importlib.metadata.distributions()
    }
    assert "supervisor" not in names
    assert "ingest-supervisor" in names


def test_console_scripts_are_installed() -> None:
    bindir = Path(sys.executable).parent
    for script in ("ingest-supervisor", "ingest-api", "ingestctl"):
        assert (bindir / script).exists(), script
    out = subprocess.run(
        [str(bindir / "ingest-supervisor"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    # --help documents every setting with its environment variable.
    from supervisor.settings import OPTIONS

    for opt in OPTIONS:
        assert opt.env in out, opt.env
