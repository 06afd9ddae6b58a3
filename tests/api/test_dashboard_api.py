"""The endpoints the dashboard reads and writes, and the dashboard's own files, on a real API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from api.settings import ApiSettingsError, load_ui_path
from tests.api.conftest import ApiServer, ServerFactory, job
from tests.daemon.conftest import SyncQueue


def batch(client: httpx.Client, jobs: list[dict[str, Any]]) -> None:
    r = client.post("/jobs:batch", json={"jobs": jobs})
    assert r.status_code == 202, r.text


def claim_and_fail(q: SyncQueue, error: str, *, retryable: bool = False) -> str:
    claim = q.try_claim("w-test", 30)
    q.fail(claim.job.job_id, claim.token, error, retryable=retryable, attempt=1)
    return str(claim.job.job_id)


def test_job_list_filters_by_tenant_and_prefix_within_a_scan_budget(api: ApiServer) -> None:
    tag = uuid.uuid4().hex[:6]
    jobs = [
        job(f"{'p' if i % 2 else 'q'}-{tag}-{i:02d}", tenant_id="ta" if i % 3 else "tb")
        for i in range(30)
    ]
    wanted = [j["job_id"] for j in jobs if j["job_id"].startswith("p-") and j["tenant_id"] == "ta"]
    with api.client() as c:
        batch(c, jobs)
        params = {"state": "waiting", "tenant_id": "ta", "job_id_prefix": f"p-{tag}", "scan": 10}
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = c.get("/jobs", params={**params, **({"cursor": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            body = page.json()
            # Each page looks at no more than `scan` entries of the set.
            assert len(body["jobs"]) <= 10
            seen += [j["job_id"] for j in body["jobs"]]
            assert all(j["tenant_id"] == "ta" for j in body["jobs"])
            pages += 1
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == wanted
        assert pages >= 3
        newest = c.get("/jobs", params={**params, "scan": 1000, "order": "desc"}).json()
        assert [j["job_id"] for j in newest["jobs"]] == list(reversed(wanted))
        assert c.get("/jobs", params={"order": "sideways"}).status_code == 422


def test_stats_counts_and_throughput_per_minute(api: ApiServer) -> None:
    q = SyncQueue(api.queue)
    with api.client() as c:
        batch(c, [job() for _ in range(3)])
        claim = q.try_claim("w-test", 30)
        assert q.complete(claim.job.job_id, claim.token, {"ok": True})
        claim_and_fail(q, "boom")
        stats = c.get("/stats").json()
        assert stats["queue"] == api.queue
        assert stats["counts"]["completed"] >= 1 and stats["counts"]["failed"] >= 1
        assert stats["oldest_waiting_s"] is not None
        t = c.get("/stats/throughput").json()
        assert len(t["minute_starts"]) == len(t["completed"]) == 60
        assert sum(t["completed"]) >= 1 and sum(t["failed"]) >= 1


def test_job_events_history_in_order_with_secrets_scrubbed(api: ApiServer) -> None:
    q = SyncQueue(api.queue)
    secret = "tok-" + uuid.uuid4().hex
    payload = job(data_source={"type": "url", "url": "https://x.test", "trial_token": secret})
    with api.client() as c:
        assert c.post("/jobs", json=payload).status_code == 202
        # Drain anything queued earlier in this module so the claim takes this job.
        while True:
            claim = q.try_claim("w-test", 30)
            if claim.job.job_id == payload["job_id"]:
                break
            q.complete(claim.job.job_id, claim.token, None)
        q.progress(payload["job_id"], claim.token, 40.0, f"read with {secret}")
        q.fail(payload["job_id"], claim.token, f"denied for {secret}", retryable=False, attempt=1)
        r = c.get(f"/jobs/{payload['job_id']}/events")
        assert r.status_code == 200, r.text
        body = r.json()
        assert [e["type"] for e in body["events"]] == ["enqueued", "started", "progress", "failed"]
        assert body["complete"] is True
        assert secret not in r.text
        assert c.get("/jobs/nope-404/events").status_code == 404


def test_dead_letters_grouped_by_first_line_then_retried_together(api: ApiServer) -> None:
    q = SyncQueue(api.queue)
    tag = uuid.uuid4().hex[:6]
    with api.client() as c:
        # Earlier tests of the module may have left ready jobs: finish them first.
        while (claim := q.try_claim("w-test", 30)) is not None and not isinstance(claim, float):
            q.complete(claim.job.job_id, claim.token, None)
        batch(c, [job(f"dl-{tag}-{i}") for i in range(4)])
        for i in range(3):
            claim_and_fail(q, f"Timeout {tag}\nattempt detail {i}")
        claim_and_fail(q, f"Other {tag}")
        dead = c.get("/dead-letters").json()
        groups = {g["error"]: g for g in dead["groups"]}
        assert groups[f"Timeout {tag}"]["count"] == 3
        assert groups[f"Other {tag}"]["count"] == 1
        ids = groups[f"Timeout {tag}"]["job_ids"]

        assert c.post("/jobs:retry", json={"job_ids": ["bad id!"]}).status_code == 422
        assert c.post("/jobs:retry", json={"job_ids": []}).status_code == 422
        with api.client(token="wrong") as other:
            assert other.post("/jobs:retry", json={"job_ids": ids}).status_code == 401
        r = c.post("/jobs:retry", json={"job_ids": [*ids, "dl-missing"]})
        assert r.status_code == 200, r.text
        assert r.json()["retried"] == 3
        assert {i["outcome"] for i in r.json()["results"]} == {"requeued", "missing"}
        assert all(c.get(f"/jobs/{i}").json()["state"] == "waiting" for i in ids)
        # Already waiting: reported as such, not counted as retried.
        r = c.post("/jobs:retry", json={"job_ids": ids})
        assert r.json()["retried"] == 0
        assert {i["outcome"] for i in r.json()["results"]} == {"waiting"}


def test_health_says_why_it_is_unhealthy(api: ApiServer) -> None:
    r = httpx.get(f"{api.url}/health/queue")
    assert r.status_code == 503
    assert any(reason.startswith("worker:") for reason in r.json()["reasons"])


def test_dashboard_files_served_with_a_strict_content_security_policy(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url) as c:
        r = c.get("/ui")
        assert r.status_code == 308 and r.headers["location"] == "ui/"
        page = c.get("/ui/")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert 'content="../"' in page.text
        js = c.get("/ui/app.js")
        assert js.headers["content-type"].startswith("text/javascript")
        for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in js.text
        assert c.get("/ui/../api/settings.py").status_code == 404


def test_dashboard_path_is_configurable_or_off(api_server: ServerFactory) -> None:
    moved = api_server(INGEST_UI_PATH="/ops/dash")
    page = httpx.get(f"{moved.url}/ops/dash/")
    assert page.status_code == 200 and 'content="../../"' in page.text
    assert httpx.get(f"{moved.url}/ui/").status_code == 404
    off = api_server(INGEST_UI_PATH="off")
    assert httpx.get(f"{off.url}/ui/").status_code == 404


@pytest.mark.parametrize("bad", ["/jobs", "ui", "/a b", "/x/../y", "/" + "a" * 70])
def test_bad_dashboard_path_is_refused_with_the_variable_named(bad: str) -> None:
    with pytest.raises(ApiSettingsError, match="INGEST_UI_PATH"):
        load_ui_path({"INGEST_UI_PATH": bad})
