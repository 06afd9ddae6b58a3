"""The shipped systemd units: `systemd-analyze verify` must print nothing, and the settings
the daemon relies on (notify, kill mode, stop timeout, environment files) are in place."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ingest_worker.config import ENV_VARS as WORKER_ENV_VARS
from supervisor.daemon import SETTLE_AFTER_KILL_S
from supervisor.settings import OPTIONS
from supervisor.stop_tail import STOP_TAIL_S

from .units import INSTALLED_BIN, REPO_ROOT, SYSTEMD_DIR, one, seconds, values

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
VENV_BIN = Path(sys.executable).parent
TEMPLATE = SYSTEMD_DIR / "ingest-supervisor@.service"
API = SYSTEMD_DIR / "ingest-api.service"
TARGET = SYSTEMD_DIR / "ingest-supervisor.target"
ENV_EXAMPLE = SYSTEMD_DIR / "ingest-supervisor.env.example"
UNITS = sorted(p.name for p in SYSTEMD_DIR.iterdir() if p.suffix in (".service", ".target"))

# The daemon's deadline for flushing status writes and traces after the last job stopped.

needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed"
)


def _default(env: str) -> float:
    return float(next(o.default for o in OPTIONS if o.env == env))


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units as installed, except that ExecStart= points at this checkout's venv:
    verify refuses a command that does not exist, and that check must stay honest."""
    for name in UNITS:
        text = (SYSTEMD_DIR / name).read_text()
        assert INSTALLED_BIN in text or name.endswith(".target")
        (tmp_path / name).write_text(text.replace(INSTALLED_BIN, str(VENV_BIN)))
    return tmp_path


def _verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_unit_is_shipped() -> None:
    assert UNITS == ["ingest-api.service", "ingest-supervisor.target", "ingest-supervisor@.service"]


@needs_systemd_analyze
@pytest.mark.parametrize(
    "name",
    [
        "ingest-supervisor@.service",
        "ingest-supervisor@1.service",
        "ingest-supervisor@12.service",
        "ingest-api.service",
        "ingest-supervisor.target",
    ],
)
def test_systemd_analyze_verify_prints_nothing(unit_dir: Path, name: str) -> None:
    # An instance name that has no file of its own is loaded from the template, as systemd
    # does; verify exits 0 on unknown keys, so any line it prints is a failure.
    result = _verify(unit_dir / name)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_verify_would_catch_a_mistake(unit_dir: Path) -> None:
    # Guards the test above: this systemd-analyze does report what we rely on it for.
    unit = unit_dir / "ingest-api.service"
    unit.write_text(unit.read_text().replace("KillMode=mixed", "KillMode=mixed\nKilMode=x"))
    assert "Unknown key" in _verify(unit).stderr
    unit.write_text(unit.read_text().replace(str(VENV_BIN), "/nonexistent/bin"))
    assert "is not executable" in _verify(unit).stderr


def test_template_runs_a_notify_daemon_that_drains_its_own_children() -> None:
    assert one(TEMPLATE, "Service", "Type") == "notify"
    assert one(TEMPLATE, "Service", "NotifyAccess") == "main"
    assert one(TEMPLATE, "Service", "KillMode") == "mixed"
    assert one(TEMPLATE, "Service", "KillSignal") == "SIGTERM"
    # Also after a clean exit: a SIGTERM the daemon did not get from systemd (a same-user
    # child's kill, an operator's) must not leave the pool one daemon short for good.
    assert one(TEMPLATE, "Service", "Restart") == "always"
    assert seconds(one(TEMPLATE, "Service", "WatchdogSec")) > 0
    exec_start = one(TEMPLATE, "Service", "ExecStart")
    assert exec_start == f"{INSTALLED_BIN}/ingest-supervisor --instance %i"
    assert "INGEST_INSTANCE=%i" in one(TEMPLATE, "Service", "Environment").split()


def test_stop_timeout_covers_the_whole_drain() -> None:
    drain = (
        _default("INGEST_SHUTDOWN_GRACE_SECONDS")
        + _default("INGEST_KILL_GRACE_SECONDS")
        + SETTLE_AFTER_KILL_S
        + STOP_TAIL_S
    )
    assert seconds(one(TEMPLATE, "Service", "TimeoutStopSec")) >= drain + 10


def test_template_reads_shared_and_optional_per_instance_environment() -> None:
    assert values(TEMPLATE, "Service", "EnvironmentFile") == [
        "/etc/ingest-supervisor/ingest-supervisor.env",
        "-/etc/ingest-supervisor/instance-%i.env",
    ]
    assert values(API, "Service", "EnvironmentFile")[0] == (
        "/etc/ingest-supervisor/ingest-supervisor.env"
    )


@pytest.mark.parametrize("unit", [TEMPLATE, API], ids=lambda p: p.name)
def test_hardening(unit: Path) -> None:
    for key, expected in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "ingest-supervisor",
    }.items():
        assert one(unit, "Service", key) == expected, key
    text = unit.read_text()
    assert re.search(r"^#MemoryMax=", text, re.M) and re.search(r"^#TasksMax=", text, re.M)


def test_instances_belong_to_the_target() -> None:
    assert one(TEMPLATE, "Unit", "PartOf") == "ingest-supervisor.target"
    assert one(TEMPLATE, "Install", "WantedBy") == "ingest-supervisor.target"
    assert one(TARGET, "Install", "WantedBy") == "multi-user.target"


def _documented_names() -> set[str]:
    found = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?([A-Z][A-Z0-9_]*)=", line)
        if m:
            found.add(m.group(1))
    return found


def test_env_example_lists_every_daemon_setting() -> None:
    missing = {o.env for o in OPTIONS} - _documented_names()
    assert not missing


def test_env_example_lists_every_setting_of_the_built_in_worker() -> None:
    assert not set(WORKER_ENV_VARS) - _documented_names()


def test_env_example_lists_every_api_setting() -> None:
    read = set()
    for path in (REPO_ROOT / "api").glob("*.py"):
        read |= set(re.findall(r"\"((?:INGEST|SUPABASE|LANGFUSE)_[A-Z0-9_]+)\"", path.read_text()))
    read |= {"INGEST_API_HOST", "INGEST_API_PORT", "INGEST_API_WORKERS", "INGEST_API_TOKEN"}
    assert not read - _documented_names()


def test_env_example_is_valid_shell_with_every_line_uncommented(tmp_path: Path) -> None:
    # supervisord deployments source the same file; every example value must survive that.
    text = ENV_EXAMPLE.read_text()
    uncommented = re.sub(r"^#([A-Z][A-Z0-9_]*=)", r"\1", text, flags=re.M)
    for variant, body in (("as-shipped", text), ("uncommented", uncommented)):
        path = tmp_path / f"{variant}.env"
        path.write_text(body)
        out = subprocess.run(
            ["bash", "-c", 'set -eua; . "$1"; env -0', "bash", str(path)],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": "/usr/bin:/bin"},
        ).stdout
        env = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
        assert env["INGEST_QUEUE"] == "ingest"
        if variant == "uncommented":
            assert env["INGEST_WORKER_COMMAND"].endswith("-I -m ingest_worker")
            assert env["INGEST_CHILD_ENV"] == "HF_HOME"


def test_env_example_leaves_the_instance_to_the_service_manager() -> None:
    assert not re.search(r"^INGEST_INSTANCE=", ENV_EXAMPLE.read_text(), re.M)


def _exposure(unit: Path) -> float:
    assert SYSTEMD_ANALYZE is not None
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert m, result.stdout[-2000:] + result.stderr[-2000:]
    return float(m.group(1))


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("name", "ceiling"),
    [("ingest-api.service", 2.5), ("ingest-supervisor@.service", 3.5)],
)
def test_security_exposure_is_low(unit_dir: Path, name: str, ceiling: float) -> None:
    exposure = _exposure(unit_dir / name)
    assert exposure <= ceiling, f"{name}: exposure {exposure} > {ceiling}"


@pytest.mark.parametrize("unit", [TEMPLATE, API], ids=lambda p: p.name)
def test_no_capabilities_filtered_syscalls_and_private_umask(unit: Path) -> None:
    for key, expected in {
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "SystemCallArchitectures": "native",
        "ProtectProc": "invisible",
        "UMask": "0077",
        "RemoveIPC": "yes",
        "PrivateMounts": "yes",
    }.items():
        assert one(unit, "Service", key) == expected, key
    assert values(unit, "Service", "SystemCallFilter")[0] == "@system-service"
    assert "~@privileged" in values(unit, "Service", "SystemCallFilter")[1]
    credentials = values(unit, "Service", "LoadCredential")
    assert "ingest.REDIS_URL" in credentials
    # Relative names only: systemd skips a missing credential-store file, but fails the
    # start when an absolute path is missing.
    assert all(not c.startswith("/") and ":" not in c for c in credentials)


def test_api_forbids_writable_code_and_sees_only_its_processes() -> None:
    assert one(API, "Service", "MemoryDenyWriteExecute") == "yes"
    assert one(API, "Service", "ProcSubset") == "pid"
    assert "@resources" in values(API, "Service", "SystemCallFilter")[1]
