"""The alert rules: promtool checks and unit-tests them; they only use metrics we export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from supervisor.metrics import DaemonMetrics, MetricsSink
from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "check-prometheus-rules"
RULES_DIR = REPO_ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

pytestmark = pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="promtool (Debian package prometheus) is not installed"
)


def run_script(rules_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), str(rules_dir)], capture_output=True, text=True, timeout=60)


def test_shipped_rules_pass_check_and_unit_tests() -> None:
    proc = run_script(RULES_DIR)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 12 rules found" in proc.stdout


def test_a_broken_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    for f in RULES_DIR.glob("*.yml"):
        shutil.copy(f, tmp_path / f.name)
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        rules.read_text().replace("(queue_live_workers) == 0", "(queue_live_workers) < 0")
    )
    proc = run_script(tmp_path)
    assert proc.returncode != 0
    assert "IngestNoLiveWorkers" in proc.stdout + proc.stderr


def test_a_syntax_error_fails_the_check(tmp_path: Path) -> None:
    shutil.copy(RULES_DIR / "alerts_test.yml", tmp_path / "alerts_test.yml")
    (tmp_path / "alerts.yml").write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum by (\n"
    )
    assert run_script(tmp_path).returncode != 0


def alert_rules() -> list[dict[str, str]]:
    doc = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    doc = yaml.safe_load((RULES_DIR / "alerts_test.yml").read_text())
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fired, f"never seen firing: {names - fired}"
    assert names <= quiet, f"never seen quiet: {names - quiet}"


def test_rules_only_use_metrics_the_daemon_exports() -> None:
    registry = CollectorRegistry()
    MetricsSink("q", registry=registry)
    DaemonMetrics("q", registry=registry)
    exported = {sample.name for family in registry.collect() for sample in family.samples} | {
        family.name for family in registry.collect()
    }
    referenced = {
        name
        for rule in alert_rules()
        for name in re.findall(r"\b((?:queue|ingest|ingestion)_[a-z_]+)\b", rule["expr"])
    }
    assert referenced, "no metric names found in the rules"
    assert referenced <= exported, f"unknown metrics in rules: {referenced - exported}"
