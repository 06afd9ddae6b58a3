"""The API's defaults are closed: reads need the token, cross-site POSTs and foreign Host
headers are refused, purge touches only this API's finished jobs, and an exposed bind
without a token is refused at start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from supervisor.queue.jobqueue import JobQueue
from tests.api.conftest import TOKEN, ServerFactory, delete_queue, job
from tests.conftest import REDIS_URL
from tests.redis_server import free_port
from tests.waiting import wait_until

READS = ["/jobs/some-job", "/jobs", "/workers", "/events"]


def test_reads_need_the_token_whenever_one_is_set(api_server: ServerFactory) -> None:
    server = api_server()
    with server.client() as ok:
        assert ok.post("/jobs", json=job("secret-doc")).status_code == 202
    with server.client(token=None) as anon:
        for path in READS:
            r = anon.get(path, headers={"Last-Event-ID": "0-0"})
            assert r.status_code == 401, (path, r.status_code)
            assert "secret-doc" not in r.text
    with server.client() as ok:
        assert ok.get("/jobs/secret-doc").status_code == 200
        assert ok.get("/jobs").status_code == 200


def test_reads_can_be_opened_explicitly(api_server: ServerFactory) -> None:
    server = api_server(INGEST_API_AUTH_READS="0")
    with server.client(token=None) as anon:
        assert anon.get("/jobs").status_code == 200
        assert anon.post("/jobs", json=job()).status_code == 401


def test_cross_site_posts_are_refused_without_a_token(api_server: ServerFactory) -> None:
    server = api_server(INGEST_API_TOKEN="")
    payload = job("csrf-1")
    with server.client(token=None) as anon:
        body = httpx.Request("POST", "/", json=payload).content
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            r = anon.post("/jobs", content=body, headers={"Content-Type": ctype})
            assert r.status_code == 415, (ctype, r.text)
            assert r.json()["field"] == "Content-Type"
        r = anon.post(
            "/jobs:batch", content=b'{"jobs": []}', headers={"Content-Type": "text/plain"}
        )
        assert r.status_code == 415
        assert anon.get("/jobs/csrf-1").status_code == 404, "a refused POST changed nothing"

        assert anon.post("/jobs", json=payload).status_code == 202
        # A body-less cancel from a form or fetch() without headers: also refused.
        assert anon.post("/jobs/csrf-1/cancel").status_code == 415
        assert anon.get("/jobs/csrf-1").json()["state"] == "waiting"
        r = anon.post("/jobs/csrf-1/cancel", headers={"Content-Type": "application/json"})
        assert r.status_code == 200


def test_foreign_host_headers_are_refused_but_health_answers(api_server: ServerFactory) -> None:
    server = api_server(INGEST_API_TOKEN="")
    with server.client(token=None) as anon:
        rebound = {"Host": f"attacker.example:{server.port}"}
        r = anon.get("/jobs", headers=rebound)
        assert r.status_code == 400 and "INGEST_API_ALLOWED_HOSTS" in r.text
        assert anon.post("/jobs", json=job(), headers=rebound).status_code == 400
        assert anon.get("/health/live", headers=rebound).status_code == 200
        for host in ("localhost", f"localhost:{server.port}", "127.0.0.1", f"[::1]:{server.port}"):
            assert anon.get("/jobs", headers={"Host": host}).status_code == 200, host

    named = api_server(INGEST_API_ALLOWED_HOSTS="api.internal, *.ingest.example")
    with named.client() as ok:
        assert ok.get("/jobs", headers={"Host": "api.internal"}).status_code == 200
        assert ok.get("/jobs", headers={"Host": "eu.ingest.example"}).status_code == 200
        assert ok.get("/jobs", headers={"Host": "localhost"}).status_code == 400


def test_purge_touches_only_this_apis_finished_jobs(api_server: ServerFactory) -> None:
    server = api_server()
    other = f"t-{uuid.uuid4().hex[:12]}"

    async def enqueue_elsewhere() -> None:
        client = Redis.from_url(REDIS_URL)
        try:
            await JobQueue(client, other).enqueue(job("other-tenant-job"))
        finally:
            await client.aclose()

    async def other_exists() -> bool:
        client = Redis.from_url(REDIS_URL)
        try:
            return await JobQueue(client, other).get("other-tenant-job") is not None
        finally:
            await client.aclose()

    asyncio.run(enqueue_elsewhere())
    try:
        with server.client() as http:
            r = http.delete(f"/queues/{other}/jobs", params={"state": "waiting"})
            assert r.status_code == 404, r.text
            assert asyncio.run(other_exists())

            assert http.post("/jobs", json=job("mine-waiting")).status_code == 202
            for state in ("waiting", "delayed", "active"):
                r = http.delete(f"/queues/{server.queue}/jobs", params={"state": state})
                assert r.status_code == 409, (state, r.text)
            assert http.get("/jobs/mine-waiting").status_code == 200
            r = http.delete(f"/queues/{server.queue}/jobs", params={"state": "failed"})
            assert r.status_code == 200 and r.json()["removed"] == 0
    finally:
        delete_queue(REDIS_URL, other)


def _start_api(host: str, **env: str) -> subprocess.CompletedProcess[str] | None:
    """Run ingest-api on `host`; the finished process if it refused, None once it serves."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "REDIS_"))}
    full.update({"REDIS_URL": REDIS_URL, "INGEST_STATUS_BACKEND": "none", **env})
    port = free_port()
    argv = [sys.executable, "-m", "api", "--host", host, "--port", str(port)]
    proc = subprocess.Popen(argv, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def answers() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).is_success
        return False

    try:
        wait_until(lambda: proc.poll() is not None or answers(), 30, "ingest-api to start or stop")
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            return subprocess.CompletedProcess(argv, proc.returncode, out, "")
        return None
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=20)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_an_exposed_bind_without_a_token_is_refused(host: str) -> None:
    refused = _start_api(host, INGEST_API_TOKEN="")
    assert refused is not None, f"ingest-api served on {host} without a token"
    assert refused.returncode == 2 and "INGEST_API_TOKEN" in refused.stdout
    refused = _start_api(host, INGEST_API_TOKEN=TOKEN)
    assert refused is not None and "INGEST_API_ALLOWED_HOSTS" in refused.stdout


def test_an_exposed_bind_serves_with_an_explicit_opt_in() -> None:
    served = _start_api(
        "0.0.0.0", INGEST_API_TOKEN="", INGEST_API_INSECURE="1", INGEST_API_ALLOWED_HOSTS="*"
    )
    assert served is None, served.stdout if served else ""


def test_the_api_reads_its_token_and_redis_url_from_files(
    api_server: ServerFactory, tmp_path: Path
) -> None:
    from tests.conftest import REDIS_URL

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    url_file = tmp_path / "redis-url"
    url_file.write_text(REDIS_URL)
    server = api_server(
        INGEST_API_TOKEN="",
        INGEST_API_TOKEN_FILE=str(token_file),
        REDIS_URL="",
        REDIS_URL_FILE=str(url_file),
    )
    try:
        with server.client() as http:
            assert http.get("/jobs").status_code == 200
        with server.client(token="wrong-token-0123456789") as http:
            assert http.get("/jobs").status_code == 401
    finally:
        server.env["REDIS_URL"] = REDIS_URL  # so the fixture cleans the queue up
