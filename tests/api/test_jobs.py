"""Job endpoints through a real uvicorn process against the real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis

from supervisor.queue.jobqueue import Claim, JobQueue
from supervisor.queue.keys import QueueKeys
from supervisor.queue.payload import PayloadError, validate_payload
from tests.api.conftest import TOKEN, ApiServer, ServerFactory, job
from tests.conftest import REDIS_URL

SECRET = "tt-very-secret-value-42"


@pytest.fixture(scope="module")
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


@pytest.fixture
async def ahttp(api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=10) as c:
        yield c


@pytest.fixture
def store(api: ApiServer) -> Iterator[tuple[redis.Redis, QueueKeys]]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client, QueueKeys(api.queue)
    client.close()


@pytest.fixture
async def queue(api: ApiServer) -> AsyncIterator[JobQueue]:
    client = Redis.from_url(REDIS_URL)
    yield JobQueue(client, api.queue)
    await client.aclose()


async def claim_job(queue: JobQueue, job_id: str) -> Claim:
    """Claim `job_id`, completing whatever else this module's shared queue hands out first."""
    while True:
        claim = await queue.claim("w-1", lease_s=30, timeout_s=5)
        assert claim is not None, f"{job_id} never claimed"
        if claim.job.job_id == job_id:
            return claim
        await queue.complete(claim.job.job_id, claim.token)


def stored(store: tuple[redis.Redis, QueueKeys], job_id: str) -> bool:
    client, keys = store
    return bool(client.hexists(keys.jobs, job_id) or client.hexists(keys.payloads, job_id))


# ---- POST /jobs ---------------------------------------------------------------------


def test_enqueue_then_repeat_returns_existing_job(http: httpx.Client, store: Any) -> None:
    payload = job(data_source={"type": "url", "url": "https://x.test", "trial_token": SECRET})
    r = http.post("/jobs", json=payload)
    assert r.status_code == 202, r.text
    assert r.json() == {"job_id": payload["job_id"], "status": "queued"}
    assert r.headers["location"] == f"/jobs/{payload['job_id']}"

    again = http.post("/jobs", json={**payload, "priority": "high"})
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["job_id"] == payload["job_id"]
    assert body["state"] == "waiting" and body["status"] == "queued"
    assert body["priority"] == "normal"  # the first enqueue's job, unchanged
    assert body["payload"]["data_source"]["trial_token"] == "[redacted]"
    assert SECRET not in again.text and SECRET not in r.text
    client, keys = store
    assert client.zcard(keys.waiting) >= 1
    assert client.zscore(keys.waiting, payload["job_id"]) is not None


INVALID: list[tuple[str, dict[str, Any]]] = [
    ("empty job_id", job(job_id="")),
    ("bad characters", job(job_id="has space/slash")),
    ("unknown source type", job(data_source={"type": "ftp"})),
    ("bad priority", job(priority="urgent")),
    ("missing tenant", {k: v for k, v in job().items() if k != "tenant_id"}),
    ("unknown field", job(colour="blue")),
    ("timeout not a number", job(timeout_s="soon")),
    ("not an object", ["a", "list"]),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("case", "payload"), INVALID, ids=[c for c, _ in INVALID])
def test_invalid_payload_is_422_naming_field_and_rule(
    http: httpx.Client, store: Any, case: str, payload: Any
) -> None:
    with pytest.raises(PayloadError) as expected:
        validate_payload(payload)
    client, keys = store
    before = client.hlen(keys.jobs), client.hlen(keys.payloads)

    r = http.post("/jobs", json=payload)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == expected.value.field
    assert body["rule"] == expected.value.rule
    assert body["detail"] == str(expected.value)
    assert (client.hlen(keys.jobs), client.hlen(keys.payloads)) == before


def test_invalid_payload_never_echoes_secret(http: httpx.Client) -> None:
    r = http.post("/jobs", json=job(priority="urgent", metadata={"trial_token": SECRET}))
    assert r.status_code == 422
    assert SECRET not in r.text


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"[" * 5000 + b"]" * 5000, b""])
def test_malformed_json_is_422(http: httpx.Client, body: bytes) -> None:
    r = http.post("/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "body"


def test_body_over_256_kib_is_413_and_nothing_stored(http: httpx.Client, store: Any) -> None:
    payload = job(metadata={"blob": "x" * (256 * 1024)})
    r = http.post("/jobs", json=payload)
    assert r.status_code == 413, r.text
    assert not stored(store, payload["job_id"])

    # Without a Content-Length (chunked), the body is counted as it arrives.
    raw = json.dumps(payload).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(raw), 16 * 1024):
            yield raw[i : i + 16 * 1024]

    r = http.post("/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert not stored(store, payload["job_id"])


def test_body_just_under_limit_is_parsed(http: httpx.Client) -> None:
    payload = job(metadata={"blob": "x" * (250 * 1024)})
    r = http.post("/jobs", json=payload)
    assert r.status_code == 202, r.text


# ---- POST /jobs:batch ---------------------------------------------------------------


def test_batch_all_or_nothing(http: httpx.Client, store: Any) -> None:
    jobs = [job() for _ in range(3)]
    r = http.post("/jobs:batch", json={"jobs": jobs})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["created"] == 3 and body["existing"] == 0
    assert [j["job_id"] for j in body["jobs"]] == [j["job_id"] for j in jobs]
    assert all(j["status"] == "queued" and j["created"] for j in body["jobs"])

    again = http.post("/jobs:batch", json={"jobs": jobs})
    assert again.status_code == 200
    assert again.json()["existing"] == 3

    fresh = [job(), job(data_source={"type": "nope"}), job()]
    bad = http.post("/jobs:batch", json={"jobs": fresh})
    assert bad.status_code == 422
    assert bad.json()["field"] == "jobs[1].data_source.type"
    assert not any(stored(store, j["job_id"]) for j in fresh)

    dup = job()
    r = http.post("/jobs:batch", json={"jobs": [job(), dup, dup]})
    assert r.status_code == 422
    assert r.json()["field"] == "jobs[2].job_id"  # the second time it appears
    assert not stored(store, dup["job_id"])

    for empty in ({"jobs": []}, {}, []):
        assert http.post("/jobs:batch", json=empty).status_code == 422


# ---- GET /jobs/{id} -------------------------------------------------------------------


def test_get_unknown_and_invalid_ids(http: httpx.Client) -> None:
    r = http.get("/jobs/no-such-job")
    assert r.status_code == 404
    assert r.json()["detail"] == "job no-such-job not found"
    r = http.get("/jobs/bad%20id")
    assert r.status_code == 422
    assert r.json()["field"] == "job_id"


async def test_get_shows_progress_attempts_error_result_without_secrets(
    ahttp: httpx.AsyncClient, queue: JobQueue
) -> None:
    payload = job(
        data_source={"type": "url", "url": "https://x.test", "trial_token": SECRET},
        max_attempts=2,
    )
    assert (await ahttp.post("/jobs", json=payload)).status_code == 202
    claim = await claim_job(queue, payload["job_id"])
    await queue.progress(payload["job_id"], claim.token, 40, "chunking")

    view = (await ahttp.get(f"/jobs/{payload['job_id']}")).json()
    assert view["state"] == "active" and view["status"] == "processing"
    assert view["progress"] == 40 and view["message"] == "chunking"
    assert view["attempt"] == 1 and view["max_attempts"] == 2
    assert view["worker_id"] == "w-1"
    assert view["started_at"] is not None and view["enqueued_at"] is not None

    # A child that printed the secret in its error: the API scrubs it on the way out.
    await queue.fail(
        payload["job_id"], claim.token, f"401 for token {SECRET}", retryable=False, attempt=1
    )
    r = await ahttp.get(f"/jobs/{payload['job_id']}")
    view = r.json()
    assert view["state"] == "failed" and view["status"] == "failed"
    assert "[redacted]" in view["error"]
    assert view["finished_at"] is not None
    assert SECRET not in r.text

    ok = job()
    assert (await ahttp.post("/jobs", json=ok)).status_code == 202
    claim = await claim_job(queue, ok["job_id"])
    await queue.complete(ok["job_id"], claim.token, {"chunks": 12, "api_key": "k-123456"})
    view = (await ahttp.get(f"/jobs/{ok['job_id']}")).json()
    assert view["status"] == "completed"
    assert view["result"] == {"chunks": 12, "api_key": "[redacted]"}


def test_custom_secret_keys_are_redacted(http: httpx.Client) -> None:
    payload = job(metadata={"custom_secret": "cs-987654321"})
    http.post("/jobs", json=payload)
    r = http.get(f"/jobs/{payload['job_id']}")
    assert r.json()["payload"]["metadata"]["custom_secret"] == "[redacted]"


# ---- GET /jobs ------------------------------------------------------------------------


def test_listing_then_purge(api_server: ServerFactory) -> None:
    server = api_server()
    with server.client() as http:
        ids = [job()["job_id"] for _ in range(5)]
        for i in ids:
            assert http.post("/jobs", json=job(i)).status_code == 202
        assert http.post(f"/jobs/{ids[0]}/cancel").status_code == 200

        page = http.get("/jobs", params={"state": "waiting", "limit": 2}).json()
        assert [j["job_id"] for j in page["jobs"]] == ids[1:3]
        seen = [j["job_id"] for j in page["jobs"]]
        while page["next_cursor"]:
            page = http.get(
                "/jobs", params={"state": "waiting", "limit": 2, "cursor": page["next_cursor"]}
            ).json()
            seen += [j["job_id"] for j in page["jobs"]]
        assert seen == ids[1:]

        everything: list[str] = []
        cursor = None
        for _ in range(10):
            params: dict[str, Any] = {"limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = http.get("/jobs", params=params).json()
            everything += [j["job_id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert everything == ids[1:] + ids[:1]  # waiting first, then cancelled
        assert all(j["payload"] is None for j in page["jobs"])

        assert http.get("/jobs", params={"state": "bogus"}).status_code == 422
        assert http.get("/jobs", params={"limit": 0}).status_code == 422
        r = http.get("/jobs", params={"cursor": "nonsense"})
        assert r.status_code == 422 and r.json()["field"] == "cursor"

        # Purge, on the same queue: the one cancelled job goes, the waiting ones stay.
        r = http.delete(f"/queues/{server.queue}/jobs", params={"state": "cancelled"})
        assert r.status_code == 200, r.text
        assert r.json() == {"queue": server.queue, "state": "cancelled", "removed": 1}
        assert http.get(f"/jobs/{ids[0]}").status_code == 404
        assert http.get(f"/jobs/{ids[1]}").status_code == 200

        r = http.delete(f"/queues/{server.queue}/jobs", params={"state": "active"})
        assert r.status_code == 409
        assert http.delete(f"/queues/{server.queue}/jobs").status_code == 422
        r = http.delete("/queues/bad%20name/jobs", params={"state": "failed"})
        assert r.status_code == 422 and r.json()["field"] == "queue"


# ---- cancel / retry -------------------------------------------------------------------


async def test_cancel_and_retry(ahttp: httpx.AsyncClient, queue: JobQueue) -> None:
    waiting = job()
    await ahttp.post("/jobs", json=waiting)
    r = await ahttp.post(f"/jobs/{waiting['job_id']}/cancel")
    assert r.status_code == 200 and r.json()["outcome"] == "cancelled"
    assert (await ahttp.get(f"/jobs/{waiting['job_id']}")).json()["status"] == "cancelled"

    r = await ahttp.post(f"/jobs/{waiting['job_id']}/retry")
    assert r.status_code == 200 and r.json() == {"job_id": waiting["job_id"], "state": "waiting"}
    # Idempotent, as the protocol reports it: the job is waiting either way.
    assert (await ahttp.post(f"/jobs/{waiting['job_id']}/retry")).status_code == 200

    claim = await claim_job(queue, waiting["job_id"])
    assert (await ahttp.post(f"/jobs/{waiting['job_id']}/retry")).status_code == 409  # running
    r = await ahttp.post(f"/jobs/{waiting['job_id']}/cancel")
    assert r.status_code == 202 and r.json()["outcome"] == "requested"
    renewed = await queue.renew(waiting["job_id"], claim.token, 30)
    assert renewed.cancel_requested
    await queue.ack_cancel(waiting["job_id"], claim.token)

    done = job()
    await ahttp.post("/jobs", json=done)
    claim = await claim_job(queue, done["job_id"])
    await queue.complete(done["job_id"], claim.token)
    assert (await ahttp.post(f"/jobs/{done['job_id']}/cancel")).status_code == 409
    assert (await ahttp.post(f"/jobs/{done['job_id']}/retry")).status_code == 409
    assert (await ahttp.post("/jobs/missing-job/cancel")).status_code == 404
    assert (await ahttp.post("/jobs/missing-job/retry")).status_code == 404
    assert (await ahttp.post("/jobs/bad%20id/cancel")).status_code == 422


# ---- workers, metrics, liveness, OpenAPI ----------------------------------------------


async def test_workers_lists_live_heartbeats(ahttp: httpx.AsyncClient, queue: JobQueue) -> None:
    from supervisor.queue.workers import WorkerRegistry

    reg = WorkerRegistry(queue.client, queue.keys)
    await reg.beat("host:i1:123", {"host": "host", "pid": 123, "slots": 4, "busy": 1}, 30)
    try:
        body = (await ahttp.get("/workers")).json()
        assert [w["worker_id"] for w in body["workers"]] == ["host:i1:123"]
        assert body["total_slots"] == 4 and body["busy_slots"] == 1
    finally:
        await reg.remove("host:i1:123")
    assert (await ahttp.get("/workers")).json()["workers"] == []


def test_metrics_live_ready(http: httpx.Client, api: ApiServer) -> None:
    r = http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert f'queue="{api.queue}"' in r.text
    assert http.get("/health/live").json() == {"status": "ok"}
    assert http.get("/health/ready").json() == {"ready": True, "redis_status": "ready"}


def test_openapi_declares_models_and_errors(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    paths = doc["paths"]

    def codes(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert {"202", "200", "401", "413", "422", "503"} <= codes("/jobs", "post")
    assert {"202", "200", "401", "413", "422", "503"} <= codes("/jobs:batch", "post")
    assert {"200", "404", "422", "503"} <= codes("/jobs/{job_id}", "get")
    assert {"200", "422", "503"} <= codes("/jobs", "get")
    assert {"200", "202", "401", "404", "409"} <= codes("/jobs/{job_id}/cancel", "post")
    assert {"200", "401", "404", "409"} <= codes("/jobs/{job_id}/retry", "post")
    assert {"200", "401", "409", "422"} <= codes("/queues/{queue}/jobs", "delete")
    assert {"200", "503"} <= codes("/health/queue", "get")
    schemas = doc["components"]["schemas"]
    for name in ("JobPayload", "JobBatch", "DataSource", "Job", "QueueHealth", "ErrorBody"):
        assert name in schemas
    body = paths["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobPayload"}
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert paths["/jobs"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/health/queue"]["get"]


def test_openapi_declares_every_refusal_a_route_can_give(http: httpx.Client) -> None:
    """A route that refuses tenant-scoped tokens declares 403; every POST, which refuses a
    body that is not JSON (cross-site posts), declares 415."""
    import inspect

    from api.auth import require_write
    from api.routes_dashboard import router as dashboard_router
    from api.routes_jobs import router as jobs_router
    from api.routes_ops import router as ops_router

    paths = http.get("/openapi.json").json()["paths"]
    checked = 0
    for route in (*jobs_router.routes, *ops_router.routes, *dashboard_router.routes):
        endpoint = getattr(route, "endpoint", None)
        methods = getattr(route, "methods", None) or set()
        if endpoint is None or getattr(route, "include_in_schema", True) is False:
            continue
        path = getattr(route, "path", "")
        if path not in paths:
            continue
        source = inspect.getsource(endpoint)
        dependencies = [d.dependency for d in getattr(route, "dependencies", [])]
        for method in methods - {"HEAD"}:
            declared = set(paths[path][method.lower()]["responses"])
            if "require_admin()" in source:
                assert "403" in declared, f"{method} {path} refuses tenant tokens with 403"
            if method == "POST" and require_write in dependencies:
                assert "415" in declared, f"{method} {path} refuses non-JSON bodies with 415"
            checked += 1
    assert checked > 10
