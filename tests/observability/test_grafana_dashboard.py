"""The Grafana dashboard: valid JSON, the panels operators need, PromQL that parses and
refers only to metrics we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from supervisor.metrics import DaemonMetrics, MetricsSink
from tests.conftest import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "ingest-supervisor.json"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_panels_cover_what_operators_watch() -> None:
    doc = dashboard()
    assert doc["uid"] == "ingest-supervisor"
    titles = " | ".join(p["title"].lower() for p in doc["panels"])
    for needed in ("throughput", "failure rate", "p95", "queue depth", "slots"):
        assert needed in titles, needed
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "queue"} <= variables


def test_queries_use_only_exported_metrics() -> None:
    registry = CollectorRegistry()
    MetricsSink("q", registry=registry)
    DaemonMetrics("q", registry=registry)
    exported = {s.name for f in registry.collect() for s in f.samples} | {
        f.name + suffix for f in registry.collect() for suffix in ("", "_total", "_bucket")
    }
    used = {m for e in exprs() for m in re.findall(r"\b((?:queue|ingest|ingestion)_[a-z_]+)\b", e)}
    assert used and used <= exported, f"unknown metrics: {used - exported}"


@pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool is not installed")
def test_queries_parse_as_promql(tmp_path: Path) -> None:
    rules = [
        {
            "record": f"dashboard:query{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$queue", ".*"),
        }
        for i, e in enumerate(exprs())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
