"""Tenant-scoped tokens: a token that sees and changes one tenant's jobs and nothing else."""

from __future__ import annotations

import json

import httpx
import pytest

from api.settings import ApiSettingsError, load_api_settings
from tests.api.conftest import TOKEN, ServerFactory, job
from tests.waiting import wait_until

TOKEN_A = "tenant-a-token-0123456789"
TOKEN_B = "tenant-b-token-0123456789"
SCOPED = f"tenant-a:{TOKEN_A}, tenant-b:{TOKEN_B}"


def test_a_scoped_token_sees_and_changes_only_its_tenant(api_server: ServerFactory) -> None:
    server = api_server(INGEST_API_TENANT_TOKENS=SCOPED)
    with (
        server.client() as admin,
        server.client(token=TOKEN_A) as a,
        server.client(token=TOKEN_B) as b,
    ):
        assert a.post("/jobs", json=job("a-1", tenant_id="tenant-a")).status_code == 202
        assert b.post("/jobs", json=job("b-1", tenant_id="tenant-b")).status_code == 202

        r = a.post("/jobs", json=job("a-2", tenant_id="tenant-b"))
        assert r.status_code == 403 and r.json()["field"] == "tenant_id"
        r = a.post(
            "/jobs:batch", json={"jobs": [job(tenant_id="tenant-a"), job("x", tenant_id="t")]}
        )
        assert r.status_code == 403 and r.json()["field"] == "jobs[1].tenant_id"

        # Another tenant's job is indistinguishable from a missing one.
        for path in ("/jobs/b-1",):
            missing = a.get("/jobs/no-such-job")
            other = a.get(path)
            assert (other.status_code, other.json()["detail"].replace("b-1", "X")) == (
                missing.status_code,
                missing.json()["detail"].replace("no-such-job", "X"),
            )
        assert a.get("/jobs/a-1").json()["tenant_id"] == "tenant-a"
        assert [j["job_id"] for j in a.get("/jobs").json()["jobs"]] == ["a-1"]
        assert sorted(j["job_id"] for j in admin.get("/jobs").json()["jobs"]) == ["a-1", "b-1"]

        assert a.post("/jobs/b-1/cancel").status_code == 404
        assert a.post("/jobs/b-1/retry").status_code == 404
        assert admin.get("/jobs/b-1").json()["state"] == "waiting"
        # Re-posting another tenant's id answers 409 with none of its data.
        r = a.post("/jobs", json=job("b-1", tenant_id="tenant-a"))
        assert r.status_code == 409 and "tenant-b" not in r.text and "example.com" not in r.text

        assert a.get("/workers").status_code == 403
        r = a.delete(f"/queues/{server.queue}/jobs", params={"state": "failed"})
        assert r.status_code == 403
        assert a.get("/events").status_code == 422
        assert a.get("/events", params={"job_id": "b-1"}).status_code == 404
        # The dashboard's queue-wide views are not for a scoped token; a job's history is,
        # for its own jobs only.
        for path in ("/stats", "/stats/throughput", "/dead-letters"):
            assert a.get(path).status_code == 403, path
            assert admin.get(path).status_code == 200, path
        assert a.get("/jobs/b-1/events").status_code == 404
        assert a.get("/jobs/a-1/events").status_code == 200
        assert a.post("/jobs:retry", json={"job_ids": ["b-1"]}).status_code == 403
        assert b.post("/jobs/b-1/cancel").status_code == 200

    with httpx.Client(base_url=server.url, timeout=10) as anon:
        assert anon.get("/jobs").status_code == 401
    with server.client(token="tenant-a-token-wrong") as wrong:
        assert wrong.get("/jobs").status_code == 401


def test_scoped_tokens_alone_close_the_api(api_server: ServerFactory) -> None:
    server = api_server(INGEST_API_TOKEN="", INGEST_API_TENANT_TOKENS=SCOPED)
    with httpx.Client(base_url=server.url, timeout=10) as anon:
        assert anon.post("/jobs", json=job()).status_code == 401
        assert anon.get("/jobs").status_code == 401
    with server.client(token=TOKEN_A) as a:
        assert a.post("/jobs", json=job(tenant_id="tenant-a")).status_code == 202
    assert TOKEN not in server.output()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("tenant-a", "tenant_id:token"),
        ("bad tenant!:" + TOKEN_A, "tenant_id:token"),
        ("tenant-a:short", "shorter than 16"),
        (f"tenant-a:{TOKEN_A},tenant-b:{TOKEN_A}", "distinct"),
        (f"tenant-a:{TOKEN}", "distinct"),
        # The token first, or a token holding ':': what comes before the last ':' is no
        # tenant to quote.
        (f"{TOKEN_A}:tenant-a", "entry 1 .*shorter than 16"),
        (f"tenant-b:{TOKEN_B},tenant-a:SECRETPART:0123456789abc", "entry 2 .*shorter than 16"),
    ],
)
def test_bad_tenant_tokens_fail_fast_without_quoting_a_token(raw: str, message: str) -> None:
    env = {"INGEST_API_TOKEN": TOKEN, "INGEST_API_TENANT_TOKENS": raw}
    with pytest.raises(ApiSettingsError, match=message) as err:
        load_api_settings(env)
    for secret in (TOKEN_A, TOKEN_B, TOKEN, "SECRETPART"):
        assert secret not in str(err.value)


def test_a_short_all_tenant_token_fails_fast_without_quoting_it() -> None:
    """The token that reaches every tenant's jobs is held to the same minimum as theirs."""
    with pytest.raises(ApiSettingsError, match=r"INGEST_API_TOKEN.*shorter than 16") as err:
        load_api_settings({"INGEST_API_TOKEN": "short-admin"})
    assert "short-admin" not in str(err.value)


def test_a_reused_job_id_never_replays_the_other_tenants_events(
    api_server: ServerFactory,
) -> None:
    """Tenant A's failed job leaves Redis; tenant B enqueues the same id. B's stream, even
    replayed from the start, holds none of A's events."""
    import asyncio
    from datetime import datetime

    from redis.asyncio import Redis

    from supervisor.queue.jobqueue import JobQueue
    from tests.conftest import REDIS_URL

    server = api_server(INGEST_API_TENANT_TOKENS=SCOPED)

    async def a_fails_privately() -> None:
        client = Redis.from_url(REDIS_URL)
        q = JobQueue(client, server.queue)
        try:
            await q.enqueue(job("reuse-1", tenant_id="tenant-a"))
            claim = await q.claim("w", lease_s=30, timeout_s=5)
            assert claim is not None
            await q.progress("reuse-1", claim.token, 50, "A-PRIVATE progress")
            await q.fail("reuse-1", claim.token, "A-PRIVATE error", retryable=False, attempt=1)
            assert await q.purge("failed") == 1
        finally:
            await client.aclose()

    asyncio.run(a_fails_privately())
    with server.client(token=TOKEN_B) as b:
        assert b.post("/jobs", json=job("reuse-1", tenant_id="tenant-b")).status_code == 202
        b_since = datetime.fromisoformat(b.get("/jobs/reuse-1").json()["enqueued_at"])
        b_since_ms = int(b_since.timestamp() * 1000)
        seen: list[str] = []
        headers = {"Last-Event-ID": "0-0"}
        with b.stream("GET", "/events", params={"job_id": "reuse-1"}, headers=headers) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                seen.append(line)
                # B's own `enqueued` event comes after every event of A's run.
                if line.startswith("id: ") and int(line[4:].split("-")[0]) >= b_since_ms - 1:
                    break
    assert not [line for line in seen if "A-PRIVATE" in line], seen


def test_one_tenant_cannot_hold_every_event_stream(api_server: ServerFactory) -> None:
    """Each /events stream holds a Redis connection for as long as it is open: a scoped
    token gets a bounded number at once (429 beyond), so it cannot take them all from the
    other tenants; a stream closed gives its place back."""
    server = api_server(INGEST_API_TENANT_TOKENS=SCOPED, INGEST_API_MAX_STREAMS_PER_TENANT="2")
    with (
        server.client(token=TOKEN_A) as a,
        server.client(token=TOKEN_B) as b,
        server.client() as admin,
    ):
        assert a.post("/jobs", json=job("sa-1", tenant_id="tenant-a")).status_code == 202
        assert b.post("/jobs", json=job("sb-1", tenant_id="tenant-b")).status_code == 202
        watch_a = {"job_id": "sa-1"}

        def opens(client: httpx.Client, params: dict[str, str]) -> int:
            with client.stream("GET", "/events", params=params) as response:
                if response.status_code != 200:
                    response.read()
                    assert "2 event streams open at once per tenant" in response.json()["detail"]
                return response.status_code

        with (
            a.stream("GET", "/events", params=watch_a) as first,
            a.stream("GET", "/events", params=watch_a) as second,
        ):
            assert (first.status_code, second.status_code) == (200, 200)
            assert opens(a, watch_a) == 429
            # Another tenant and the admin token are not held back by tenant-a.
            assert opens(b, {"job_id": "sb-1"}) == 200
            assert opens(admin, watch_a) == 200
        # Both closed: their places are free again once the server sees them go.
        wait_until(lambda: opens(a, watch_a) == 200, 10, "a stream of tenant-a again")


def test_anonymous_readers_share_one_count_of_event_streams(api_server: ServerFactory) -> None:
    """With reads opened (INGEST_API_AUTH_READS=0) a tenant could drop its token to get
    around its own count: callers without a token count together."""
    server = api_server(
        INGEST_API_TENANT_TOKENS=SCOPED,
        INGEST_API_AUTH_READS="0",
        INGEST_API_MAX_STREAMS_PER_TENANT="1",
        INGEST_API_MAX_ANONYMOUS_STREAMS="2",
    )
    with server.client(token=None) as anon, server.client(token=TOKEN_B) as b:
        assert b.post("/jobs", json=job("an-1", tenant_id="tenant-b")).status_code == 202
        watch = {"job_id": "an-1"}
        with (
            anon.stream("GET", "/events", params=watch) as first,
            anon.stream("GET", "/events", params=watch) as second,
        ):
            assert (first.status_code, second.status_code) == (200, 200)
            with anon.stream("GET", "/events", params=watch) as third:
                assert third.status_code == 429
                third.read()
                assert "2 event streams open at once for callers without a token" in third.text
            with b.stream("GET", "/events", params=watch) as own:
                assert own.status_code == 200


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("INGEST_API_MAX_STREAMS_PER_TENANT", "0", ">= 1"),
        ("INGEST_API_MAX_STREAMS_PER_TENANT", "513", "<= 512"),
        ("INGEST_API_MAX_ANONYMOUS_STREAMS", "1024", "<= 512"),
        ("INGEST_API_MAX_ANONYMOUS_STREAMS", "many", "a number"),
    ],
)
def test_stream_limits_stay_below_half_the_events_pool(name: str, raw: str, message: str) -> None:
    with pytest.raises(ApiSettingsError, match=f"{name}.*{message}"):
        load_api_settings({name: raw})


def test_a_scoped_listing_reads_only_its_tenants_records(api_server: ServerFactory) -> None:
    """A scoped token's /jobs scans for its own tenant's jobs: it never decodes another
    tenant's records (their results can be up to 1 MiB each; here one cannot be decoded at
    all), and a page fills with its own jobs however many of others lie between."""
    import redis as redis_sync

    from supervisor.queue.keys import QueueKeys
    from tests.conftest import REDIS_URL

    server = api_server(INGEST_API_TENANT_TOKENS=SCOPED)
    with server.client(token=TOKEN_A) as a, server.client(token=TOKEN_B) as b:
        assert a.post("/jobs", json=job("own-1", tenant_id="tenant-a")).status_code == 202
        for i in range(5):
            assert b.post("/jobs", json=job(f"theirs-{i}", tenant_id="tenant-b")).status_code == 202
        assert a.post("/jobs", json=job("own-2", tenant_id="tenant-a")).status_code == 202
        r = redis_sync.Redis.from_url(REDIS_URL)
        try:
            jobs_key = QueueKeys(server.queue).jobs
            raw = json.loads(r.hget(jobs_key, "theirs-2"))
            r.hset(jobs_key, "theirs-2", json.dumps({**raw, "result": "{not json"}))
        finally:
            r.close()
        page = a.get("/jobs", params={"state": "waiting", "limit": 2})
        assert page.status_code == 200, page.text
        assert [j["job_id"] for j in page.json()["jobs"]] == ["own-1", "own-2"]
        other = a.get("/jobs", params={"state": "waiting", "tenant_id": "tenant-b"})
        assert other.status_code == 200 and other.json()["jobs"] == []


def test_an_open_stream_never_carries_the_job_another_tenant_gave_the_same_id(
    api_server: ServerFactory,
) -> None:
    """Tenant A watches its job; the job leaves Redis while A's stream stays open, and
    tenant B enqueues and runs a job of the same id. A's stream carries none of it."""
    import asyncio

    from redis.asyncio import Redis

    from supervisor.queue.jobqueue import JobQueue
    from tests.conftest import REDIS_URL

    server = api_server(INGEST_API_TENANT_TOKENS=SCOPED)

    async def b_works_privately() -> None:
        client = Redis.from_url(REDIS_URL)
        q = JobQueue(client, server.queue)
        try:
            claim = await q.claim("w", lease_s=30, timeout_s=5)
            assert claim is not None and claim.job.job_id == "reuse-2"
            await q.progress("reuse-2", claim.token, 50, "B-PRIVATE progress")
            await q.fail("reuse-2", claim.token, "B-PRIVATE error", retryable=False, attempt=1)
        finally:
            await client.aclose()

    with (
        server.client() as admin,
        server.client(token=TOKEN_A) as a,
        server.client(token=TOKEN_B) as b,
    ):
        assert a.post("/jobs", json=job("reuse-2", tenant_id="tenant-a")).status_code == 202
        assert a.post("/jobs", json=job("a-marker", tenant_id="tenant-a")).status_code == 202
        assert a.post("/jobs/reuse-2/cancel").status_code == 200
        seen: list[str] = []
        params = {"job_id": ["reuse-2", "a-marker"]}
        with a.stream("GET", "/events", params=params) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            snapshots = 0
            for line in lines:  # both snapshots sent: the stream reads from here on
                snapshots += line == "event: snapshot"
                if snapshots == 2:
                    break
            purge = admin.delete(f"/queues/{server.queue}/jobs", params={"state": "cancelled"})
            assert purge.status_code == 200, purge.text
            assert b.post("/jobs", json=job("reuse-2", tenant_id="tenant-b")).status_code == 202
            assert a.post("/jobs/a-marker/cancel").status_code == 200  # after A's events
            asyncio.run(b_works_privately())
            assert a.post("/jobs/a-marker/retry").status_code == 200  # after B's events
            for line in lines:
                seen.append(line)
                if line.startswith("data: ") and '"a-marker"' in line and "waiting" in line:
                    break
    assert not [line for line in seen if "B-PRIVATE" in line or "tenant-b" in line], seen


@pytest.mark.parametrize(
    "corrupt",
    [
        b"not json",
        b"\xff\xfe",
        b'{"state": "waiting"}',
        b"[1]",
        b'{"id": "bad-1", "state": "waiting", "tenant": "tenant-a", "attempt": "x"}',
    ],
)
def test_one_unreadable_record_breaks_nobody_else_s_reads(
    api_server: ServerFactory, corrupt: bytes
) -> None:
    """A stored record this version cannot read (Redis corruption, a record of another
    version) is one job's trouble: every other listing, read and health check goes on,
    and the job itself reads as missing (to its tenant and to everyone else alike)."""
    import redis

    from supervisor.queue.keys import QueueKeys
    from tests.conftest import REDIS_URL

    server = api_server(INGEST_API_TENANT_TOKENS=SCOPED)
    with (
        server.client() as admin,
        server.client(token=TOKEN_A) as a,
        server.client(token=TOKEN_B) as b,
    ):
        assert a.post("/jobs", json=job("bad-1", tenant_id="tenant-a")).status_code == 202
        assert b.post("/jobs", json=job("b-ok", tenant_id="tenant-b")).status_code == 202
        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.hset(QueueKeys(server.queue).jobs, "bad-1", corrupt)
        finally:
            client.close()
        r = b.get("/jobs")
        assert r.status_code == 200 and [j["job_id"] for j in r.json()["jobs"]] == ["b-ok"]
        r = admin.get("/jobs", params={"state": "waiting"})
        assert r.status_code == 200 and [j["job_id"] for j in r.json()["jobs"]] == ["b-ok"]
        assert b.get("/jobs/bad-1").status_code == 404
        assert admin.get("/jobs/bad-1").status_code == 404
        assert admin.get("/jobs/b-ok").status_code == 200
        health = admin.get("/health/queue").json()  # no daemon here: only the queue's part
        assert health["redis"] and health["queue"], health
        # Its id is taken, for its own tenant too: nothing changes, and no 5xx.
        for caller, tenant in ((a, "tenant-a"), (b, "tenant-b"), (admin, "tenant-a")):
            r = caller.post("/jobs", json=job("bad-1", tenant_id=tenant))
            assert r.status_code == 409, r.text
        if b'"attempt": "x"' in corrupt:
            return  # a record the scripts can read: a batch takes it as existing
        both = [job("new-1", tenant_id="tenant-a"), job("bad-1", tenant_id="tenant-a")]
        r = a.post("/jobs:batch", json={"jobs": both})
        assert r.status_code == 409 and a.get("/jobs/new-1").status_code == 404, r.text
