"""Hostile input through the real API process: deep or malformed payloads, another tenant's
job id, an error text that a byte cut would break, and the old producer's `trial_token`."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis

from supervisor.queue.jobqueue import JobQueue
from supervisor.queue.keys import QueueKeys
from supervisor.queue.payload import MAX_SECRET_VALUES
from tests.api.conftest import TOKEN, ApiServer, ServerFactory, job
from tests.api.test_events import SseReader
from tests.conftest import REDIS_URL

TRIAL = "tr_4f9c2e7d1b8a6f3e"


@pytest.fixture(scope="module")
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with api.client() as c:
        yield c


@pytest.fixture
def store(api: ApiServer) -> Iterator[tuple[redis.Redis, QueueKeys]]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client, QueueKeys(api.queue)
    client.close()


@pytest.fixture
async def aqueue(api: ApiServer) -> AsyncIterator[JobQueue]:
    client = Redis.from_url(REDIS_URL)
    yield JobQueue(client, api.queue)
    await client.aclose()


def deep(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        node = {"n": node}
    return node


def post_raw(http: httpx.Client, body: str) -> httpx.Response:
    return http.post("/jobs", content=body, headers={"Content-Type": "application/json"})


# ---- item 1: nesting depth -----------------------------------------------------------


def test_deep_metadata_is_refused_with_422_naming_the_field(http: httpx.Client) -> None:
    payload = job(metadata=deep(600))
    r = http.post("/jobs", json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith("metadata")
    assert "nested" in r.json()["rule"]
    assert http.get(f"/jobs/{payload['job_id']}").status_code == 404


def test_a_body_nested_beyond_what_json_parsing_recurses_gets_the_depth_rule(
    http: httpx.Client,
) -> None:
    """Nested deeper than the JSON decoder itself can go: still the depth rule, not a
    claim that the body is not JSON."""
    for levels in (5_000, 100_000):
        body = '{"job_id": "d", "metadata": ' + "[" * levels + "]" * levels + "}"
        r = post_raw(http, body)
        assert r.status_code == 422, r.text
        assert "nested" in r.json()["rule"], r.json()


def test_a_payload_with_too_many_secrets_is_refused_with_422(http: httpx.Client) -> None:
    """Each secret is scrubbed from every line, error and result string of its job: a
    payload holds at most MAX_SECRET_VALUES of them."""
    secrets = {f"k{i}": {"custom_secret": f"v-{i:05d}"} for i in range(MAX_SECRET_VALUES + 1)}
    payload = job(metadata=secrets)
    r = http.post("/jobs", json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "payload" and "secret-named" in r.json()["rule"]
    assert http.get(f"/jobs/{payload['job_id']}").status_code == 404
    del secrets[f"k{MAX_SECRET_VALUES}"]
    assert http.post("/jobs", json=job(metadata=secrets)).status_code == 202


def test_job_with_a_deep_payload_already_in_redis_still_reads(
    http: httpx.Client, store: tuple[redis.Redis, QueueKeys]
) -> None:
    client, keys = store
    payload = job()
    assert http.post("/jobs", json=payload).status_code == 202
    client.hset(keys.payloads, payload["job_id"], json.dumps({**payload, "metadata": deep(600)}))
    r = http.get(f"/jobs/{payload['job_id']}")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "waiting"
    assert http.get("/jobs", params={"state": "waiting"}).status_code == 200


# ---- item 11: lone surrogates, trailing newlines ----------------------------------------


def test_lone_surrogate_in_a_payload_is_refused(http: httpx.Client) -> None:
    payload = job()
    body = json.dumps(payload)[:-1] + ', "metadata": {"title": "bad \\ud800 text"}}'
    r = post_raw(http, body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "metadata.title"


def test_lone_surrogate_already_in_redis_does_not_make_get_answer_500(
    http: httpx.Client, store: tuple[redis.Redis, QueueKeys]
) -> None:
    client, keys = store
    payload = job()
    assert http.post("/jobs", json=payload).status_code == 202
    stored = json.dumps({**payload, "metadata": {"title": "bad \ud800 text"}})
    client.hset(keys.payloads, payload["job_id"], stored)
    r = http.get(f"/jobs/{payload['job_id']}")
    assert r.status_code == 200, r.text
    assert r.json()["payload"]["metadata"]["title"] == "bad \ufffd text"


def test_ids_with_a_trailing_newline_are_refused(http: httpx.Client) -> None:
    r = http.post("/jobs", json=job(job_id="abc\n"))
    assert r.status_code == 422 and r.json()["field"] == "job_id"
    r = http.post("/jobs", json=job(tenant_id="acme\n"))
    assert r.status_code == 422 and r.json()["field"] == "tenant_id"


def test_ids_of_dots_only_are_refused(http: httpx.Client) -> None:
    """/jobs/.. is /jobs/ to every URL parser: such a job could never be addressed."""
    for bad in (".", "..", "..."):
        r = http.post("/jobs", json=job(job_id=bad))
        assert r.status_code == 422 and r.json()["field"] == "job_id", bad
    assert http.post("/jobs", json=job(job_id="v1.2")).status_code in (200, 202)


# ---- item 2: job ids across tenants -----------------------------------------------------


def test_another_tenants_job_id_is_refused_with_409_and_no_data(http: httpx.Client) -> None:
    secret_text = "tenant A's private document text"
    mine = job(tenant_id="tenant-a", data_source={"type": "text", "text": secret_text})
    assert http.post("/jobs", json=mine).status_code == 202
    theirs = {**mine, "tenant_id": "tenant-b", "data_source": {"type": "text", "text": "x"}}
    r = http.post("/jobs", json=theirs)
    assert r.status_code == 409, r.text
    assert secret_text not in r.text and "tenant-a" not in r.text
    assert r.json()["field"] == "job_id"
    # The same tenant repeating its enqueue still gets its job back.
    again = http.post("/jobs", json=mine)
    assert again.status_code == 200 and again.json()["tenant_id"] == "tenant-a"
    # A batch that holds one such id stores nothing at all.
    fresh = job(tenant_id="tenant-b")
    r = http.post("/jobs:batch", json={"jobs": [fresh, theirs]})
    assert r.status_code == 409, r.text
    assert r.json()["field"] == "jobs[1].job_id"
    assert secret_text not in r.text
    assert http.get(f"/jobs/{fresh['job_id']}").status_code == 404


# ---- item 5: a non-ASCII error never breaks a stream -------------------------------------


async def test_non_ascii_error_cut_on_a_character_and_stream_goes_on(
    api_server: ServerFactory,
) -> None:
    api = api_server()
    client, keys = redis.Redis.from_url(REDIS_URL), QueueKeys(api.queue)
    aclient = Redis.from_url(REDIS_URL)
    aqueue = JobQueue(aclient, api.queue)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    bad, after = job(), job()
    error = "fetch failed: http://127.0.0.1:1/a " + "é" * 100
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as http:
        assert (await http.post("/jobs", json=bad)).status_code == 202
        claim = await aqueue.claim("w-utf8", lease_s=30, timeout_s=5)
        assert claim is not None
        start = client.xrevrange(keys.events, count=1)[0][0].decode()
        async with http.stream("GET", "/events", headers={"Last-Event-ID": start}) as response:
            sse = SseReader(response)
            await aqueue.fail(claim.job.job_id, claim.token, error, retryable=False, attempt=1)
            # An entry no script writes: bytes that are not UTF-8 at all.
            client.xadd(keys.events, {b"type": b"progress", b"job": b"x", b"message": b"\xff\xfe"})
            assert (await http.post("/jobs", json=after)).status_code == 202
            seen: list[tuple[str, dict[str, Any]]] = []
            while not any(k == "enqueued" and d["job_id"] == after["job_id"] for k, d in seen):
                _, kind, data = await sse.next()
                seen.append((kind, data))
    await aclient.aclose()
    client.close()
    failed = [d for k, d in seen if k == "failed"]
    assert len(failed) == 1
    assert failed[0]["error"].startswith("fetch failed") and "\ufffd" not in failed[0]["error"]
    assert len(failed[0]["error"].encode()) <= 200


async def test_ingestctl_watch_survives_a_bad_entry(
    queue_name: str, store: tuple[redis.Redis, QueueKeys]
) -> None:
    client, keys = store[0], QueueKeys(queue_name)
    aclient = Redis.from_url(REDIS_URL)
    aqueue = JobQueue(aclient, queue_name)
    payload = job()
    await aqueue.enqueue(payload)
    proc = await asyncio.create_subprocess_exec(
        *_ctl(queue_name, "watch", payload["job_id"], "--timeout", "30"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 10)  # watching
    client.xadd(keys.events, {b"type": b"failed", b"job": b"y", b"error": b"caf\xc3"})
    claim = await aqueue.claim("w-watch", lease_s=30, timeout_s=5)
    assert claim is not None
    await aqueue.fail(claim.job.job_id, claim.token, "é" * 150, retryable=False, attempt=1)
    out, err = await asyncio.wait_for(proc.communicate(), 40)
    await aclient.aclose()
    assert proc.returncode == 1, err.decode()
    assert b"Traceback" not in err
    assert b"failed" in out


def _ctl(queue: str, *args: str) -> list[str]:
    base = [sys.executable, "-m", "supervisor.ctl", "--redis-url", REDIS_URL, "--queue", queue]
    return [*base, *args]


# ---- issue 16 item 1: the old producer's payload ---------------------------------------


async def test_old_producer_payload_with_trial_token_is_accepted_and_redacted(
    api: ApiServer, aqueue: JobQueue
) -> None:
    payload = {
        "job_id": "job_abc123",
        "tenant_id": "tn_xyz",
        "trial_token": TRIAL,
        "data_source": {"type": "crawl", "urls": ["https://example.com"], "crawl_depth": 2},
        "priority": "high",
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as http:
        r = await http.post("/jobs", json=payload)
        assert r.status_code == 202, r.text
        again = await http.post("/jobs", json=payload)
        assert again.status_code == 200 and TRIAL not in again.text
        shown = (await http.get("/jobs/job_abc123")).json()
        assert shown["payload"]["trial_token"] == "[redacted]"
        listed = await http.get("/jobs", params={"state": "waiting"})
        assert TRIAL not in listed.text
        # The child gets it: the job JSON a claim hands over carries the token.
        claim = await aqueue.claim("w-trial", lease_s=30, timeout_s=5)
        assert claim is not None and claim.payload["trial_token"] == TRIAL
        await aqueue.fail(
            "job_abc123", claim.token, f"401 for token {TRIAL}", retryable=False, attempt=1
        )
        shown = (await http.get("/jobs/job_abc123")).json()
        assert TRIAL not in json.dumps(shown)
        r = await http.post("/jobs", json={**payload, "job_id": "job_bad", "trial_token": 5})
        assert r.status_code == 422 and r.json()["field"] == "trial_token"


# ---- credentials inside a data source's URL ----------------------------------------------

SIGNED_URL = (
    "https://bob:hunter2pw@host.example/path?X-Amz-Credential=AKIAEXAMPLE"
    "&X-Amz-Signature=deadbeefsig&access_token=tok-SECRET-123"
)
URL_SECRETS = ("hunter2pw", "AKIAEXAMPLE", "deadbeefsig", "tok-SECRET-123")


async def test_credentials_in_a_data_source_url_are_never_shown(
    api_server: ServerFactory,
) -> None:
    """The password of a URL's userinfo and its secret-named query values are redacted
    from the payload shown, and scrubbed from an error that quotes the URL."""
    api = api_server()
    aclient = Redis.from_url(REDIS_URL)
    aqueue = JobQueue(aclient, api.queue)
    payload = job(data_source={"type": "url", "url": SIGNED_URL})
    crawl = job(data_source={"type": "crawl", "urls": ["https://example.com", SIGNED_URL]})
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=30) as http:
        for one in (payload, crawl):
            r = await http.post("/jobs", json=one)
            assert r.status_code == 202, r.text
            assert not any(s in r.text for s in URL_SECRETS), r.text
        shown = await http.get(f"/jobs/{payload['job_id']}")
        assert shown.status_code == 200, shown.text
        assert shown.json()["payload"]["data_source"]["url"] == (
            "https://bob:[redacted]@host.example/path?X-Amz-Credential=[redacted]"
            "&X-Amz-Signature=[redacted]&access_token=[redacted]"
        )
        crawled = (await http.get(f"/jobs/{crawl['job_id']}")).json()
        assert crawled["payload"]["data_source"]["urls"][0] == "https://example.com"
        claim = await aqueue.claim("w-url", lease_s=30, timeout_s=5)
        assert claim is not None and claim.job.job_id == payload["job_id"]
        assert claim.payload["data_source"]["url"] == SIGNED_URL  # the child gets it whole
        error = f"fetch failed: 403 for {SIGNED_URL}"
        await aqueue.fail(claim.job.job_id, claim.token, error, retryable=False, attempt=1)
        for job_id in (payload["job_id"], crawl["job_id"]):
            text = (await http.get(f"/jobs/{job_id}")).text
            assert "host.example/path" in text
            assert not any(s in text for s in URL_SECRETS), text
    await aclient.aclose()


def _big_results(queue: str, ids: list[str], size: int) -> None:
    """Give each stored record a result of `size` bytes (a child's RESULT line can be up to
    1 MiB, and its documents are the tenant's)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        key = QueueKeys(queue).jobs
        for job_id in ids:
            rec = json.loads(client.hget(key, job_id))
            client.hset(key, job_id, json.dumps({**rec, "result": json.dumps("x" * size)}))
    finally:
        client.close()


def _all_pages(client: httpx.Client, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        got = client.get("/jobs", params={**params, **({"cursor": cursor} if cursor else {})})
        assert got.status_code == 200, got.text
        body = got.json()
        pages.append([j["job_id"] for j in body["jobs"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "listing never ended"


def test_a_listing_of_big_results_is_cut_into_bounded_pages(api_server: ServerFactory) -> None:
    """Twelve results of 1 MiB would make one page of 12 MiB (a thousand such, a GiB in
    the API's memory): a page reads at most 8 MiB of records, and the cursor goes on, so
    every job is listed exactly once."""
    server = api_server()
    ids = [f"big-{i:02d}" for i in range(12)]
    with server.client() as c:
        for job_id in ids:
            assert c.post("/jobs", json=job(job_id)).status_code == 202
        _big_results(server.queue, ids, 1024 * 1024)
        pages = _all_pages(c, state="waiting", limit=1000)
    assert len(pages[0]) < len(ids), [len(p) for p in pages]
    assert sorted(i for p in pages for i in p) == ids
    assert all(len(p) <= 9 for p in pages), [len(p) for p in pages]


def test_another_tenants_big_results_bound_a_scoped_listing(api_server: ServerFactory) -> None:
    """A scoped listing reads other tenants' records to find its own: their size counts
    towards the page's 8 MiB too, and the cursor still reaches the tenant's own job."""
    from tests.api.test_tenant_tokens import SCOPED, TOKEN_A, TOKEN_B

    server = api_server(INGEST_API_TENANT_TOKENS=SCOPED)
    theirs = [f"theirs-{i:02d}" for i in range(12)]
    with server.client(token=TOKEN_A) as a, server.client(token=TOKEN_B) as b:
        for job_id in theirs:
            assert b.post("/jobs", json=job(job_id, tenant_id="tenant-b")).status_code == 202
        assert a.post("/jobs", json=job("own-1", tenant_id="tenant-a")).status_code == 202
        _big_results(server.queue, theirs, 1024 * 1024)
        pages = _all_pages(a, state="waiting", limit=1000)
    assert len(pages) > 1, pages
    assert [i for p in pages for i in p] == ["own-1"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/jobs", "GET, POST"),
        ("DELETE", "/jobs/some-job", "GET"),
        ("PATCH", "/health/queue", "GET"),
        ("PUT", "/jobs/some-job/cancel", "POST"),
    ],
)
def test_a_wrong_method_is_told_which_ones_the_path_serves(
    http: httpx.Client, method: str, path: str, allowed: str
) -> None:
    r = http.request(method, path)
    assert r.status_code == 405, r.text
    served = {m.strip() for m in r.headers["allow"].split(",")}
    assert set(allowed.split(", ")) <= served and method not in served, r.headers["allow"]
