"""Bearer-token auth on writes and admin, optional on reads, never on health and metrics."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import TOKEN, ServerFactory, job

WRITES = [
    ("POST", "/jobs"),
    ("POST", "/jobs:batch"),
    ("POST", "/jobs/some-job/cancel"),
    ("POST", "/jobs/some-job/retry"),
    ("DELETE", "/queues/q/jobs?state=failed"),
]
READS = [("GET", "/jobs/some-job"), ("GET", "/jobs"), ("GET", "/workers")]
OPEN = ["/health/live", "/health/ready", "/health/queue", "/metrics", "/openapi.json"]


def _send(http: httpx.Client, method: str, path: str, **kw: object) -> httpx.Response:
    body = {"jobs": [job()]} if path == "/jobs:batch" else job()
    return http.request(method, path, json=body if method == "POST" else None, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("auth_reads", ["0", "1"])
def test_token_required_where_it_should_be(api_server: ServerFactory, auth_reads: str) -> None:
    server = api_server(INGEST_API_AUTH_READS=auth_reads)
    guarded = WRITES + (READS if auth_reads == "1" else [])
    with server.client(token=None) as anon, server.client(token="wrong-" + TOKEN) as wrong:
        for method, path in guarded:
            for http in (anon, wrong):
                r = _send(http, method, path)
                assert r.status_code == 401, (method, path, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert TOKEN not in r.text
            r = _send(anon, method, path, headers={"Authorization": f"Basic {TOKEN}"})
            assert r.status_code == 401
        if auth_reads == "0":
            for method, path in READS:
                assert _send(anon, method, path).status_code in (200, 404)
        for path in OPEN:
            assert anon.get(path).status_code in (200, 503), path
    with server.client() as ok:
        for method, path in guarded:
            assert _send(ok, method, path).status_code not in (401, 403), (method, path)


def test_without_a_configured_token_writes_are_open(api_server: ServerFactory) -> None:
    server = api_server(INGEST_API_TOKEN="")
    with server.client(token=None) as anon:
        assert anon.post("/jobs", json=job()).status_code == 202
