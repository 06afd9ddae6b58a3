"""/events: server-sent events of a job's progress, driven through the protocol as a daemon
would (claim, progress, complete)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from api.routes_ops import MAX_STREAM_JOBS
from supervisor.queue.jobqueue import JobQueue
from tests.api.conftest import TOKEN, ApiServer, ServerFactory, job
from tests.conftest import REDIS_URL

SECRET = "tt-events-secret-777"


class SseReader:
    """Parses an SSE response into (id, event, data) as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()

    async def next(self, timeout_s: float = 10.0) -> tuple[str | None, str, dict[str, Any]]:
        async def read() -> tuple[str | None, str, dict[str, Any]]:
            entry_id: str | None = None
            event = "message"
            data: list[str] = []
            async for line in self.lines:
                if line == "":
                    if data:
                        return entry_id, event, json.loads("\n".join(data))
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "id":
                    entry_id = value
                elif name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
            raise AssertionError("stream ended")

        return await asyncio.wait_for(read(), timeout_s)


@pytest.fixture
async def queue_for() -> AsyncIterator[Any]:
    clients: list[Redis] = []

    def make(server: ApiServer) -> JobQueue:
        client = Redis.from_url(REDIS_URL)
        clients.append(client)
        return JobQueue(client, server.queue)

    yield make
    for c in clients:
        await c.aclose()


async def test_events_deliver_progress_of_one_job(
    api_server: ServerFactory, queue_for: Any
) -> None:
    server = api_server()
    q: JobQueue = queue_for(server)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    watched = job(data_source={"type": "url", "url": "https://x.test", "trial_token": SECRET})
    other = job()
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
        assert (await http.post("/jobs", json=watched)).status_code == 202
        async with http.stream("GET", "/events", params={"job_id": watched["job_id"]}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            sse = SseReader(response)
            _, kind, snapshot = await sse.next()
            assert kind == "snapshot"
            assert snapshot["job_id"] == watched["job_id"] and snapshot["status"] == "queued"
            assert snapshot["payload"]["data_source"]["trial_token"] == "[redacted]"

            # Another job's events are filtered out.
            assert (await http.post("/jobs", json=other)).status_code == 202
            claim = await q.claim("w-events", lease_s=30, timeout_s=5)
            assert claim is not None and claim.job.job_id == watched["job_id"]
            for pct, msg in ((10, "fetching"), (55, "chunking"), (90, "embedding")):
                assert await q.progress(watched["job_id"], claim.token, pct, msg)
            assert await q.complete(watched["job_id"], claim.token, {"chunks": 3})

            seen: list[tuple[str | None, str, dict[str, Any]]] = []
            while not seen or seen[-1][1] != "completed":
                seen.append(await sse.next())
            kinds = [k for _, k, _ in seen]
            assert kinds == ["started", "progress", "progress", "progress", "completed"]
            assert all(d["job_id"] == watched["job_id"] for _, _, d in seen)
            progress = [(d["progress"], d["message"]) for _, k, d in seen if k == "progress"]
            assert progress == [(10.0, "fetching"), (55.0, "chunking"), (90.0, "embedding")]
            assert seen[0][2]["status"] == "processing" and seen[0][2]["attempt"] == 1
            assert seen[-1][2]["status"] == "completed"

        # A reconnecting browser sends Last-Event-ID and gets what followed it, no more.
        first_progress_id = seen[1][0]
        assert first_progress_id is not None
        async with http.stream(
            "GET",
            "/events",
            params={"job_id": watched["job_id"]},
            headers={"Last-Event-ID": first_progress_id},
        ) as response:
            sse = SseReader(response)
            _, kind, _ = await sse.next()
            assert kind == "snapshot"
            resumed = [await sse.next() for _ in range(3)]
        assert [(k, d.get("progress")) for _, k, d in resumed] == [
            ("progress", 55.0),
            ("progress", 90.0),
            ("completed", None),
        ]

        # Unfiltered, from the start of the stream: every job's events, secrets nowhere.
        async with http.stream("GET", "/events", headers={"Last-Event-ID": "0-0"}) as response:
            sse = SseReader(response)
            replay = []
            while True:
                entry_id, kind, data = await sse.next()
                replay.append((kind, data["job_id"]))
                if entry_id == seen[-1][0]:
                    break
        assert ("enqueued", other["job_id"]) in replay
        assert ("completed", watched["job_id"]) in replay
        assert SECRET not in json.dumps(replay)

        r = await http.get("/events", params={"job_id": "no spaces allowed"})
        assert r.status_code == 422 and r.json()["field"] == "job_id"


def test_a_stream_follows_at_most_a_bounded_number_of_jobs(api_server: ServerFactory) -> None:
    """Each followed job costs a read and a redacted snapshot when the stream opens: their
    number is bounded, and more are refused before anything is read."""
    server = api_server()
    with server.client() as http:
        ids = [f"many-{i}" for i in range(MAX_STREAM_JOBS + 1)]
        r = http.get("/events", params={"job_id": ids})
        assert r.status_code == 422, r.text
        assert r.json()["field"] == "job_id" and str(MAX_STREAM_JOBS) in r.json()["rule"]
        with http.stream("GET", "/events", params={"job_id": ids[:-1]}) as response:
            assert response.status_code == 200


def test_an_impossible_last_event_id_starts_from_now_instead_of_failing_for_ever(
    api_server: ServerFactory,
) -> None:
    server = api_server()
    with server.client() as http:
        for bad in ("99999999999999999999-1", "\u0663-1"):
            headers = {"Last-Event-ID": bad.encode("utf-8")}
            job_id = f"after-bad-{len(bad)}"
            with http.stream(
                "GET", "/events", params={"job_id": job_id}, headers=headers
            ) as response:
                assert response.status_code == 200
                assert http.post("/jobs", json=job(job_id)).status_code == 202
                for line in response.iter_lines():
                    assert "redis unavailable" not in line
                    # The job's snapshot or its `enqueued` event, whichever the enqueue
                    # raced to: either shows the stream reads.
                    if line.startswith("data:") and f'"job_id":"{job_id}"' in line:
                        break


async def test_a_scoped_stream_opened_as_its_job_changes_hands_sends_no_snapshot_of_it(
    queue_name: str,
) -> None:
    """The route checked the job's tenant; before the stream's body ran, the job left
    Redis and another tenant enqueued the same id. The stream's first snapshot is of
    nothing then, not of the other tenant's job."""
    from api.context import build_context
    from api.events import event_stream
    from api.settings import load_api_settings
    from tests.conftest import REDIS_URL

    ctx = build_context(load_api_settings({"REDIS_URL": REDIS_URL, "INGEST_QUEUE": queue_name}))
    try:
        await ctx.queue.enqueue(job("handed", tenant_id="tenant-b", metadata={"k": "B-ONLY"}))
        await ctx.queue.enqueue(job("mine", tenant_id="tenant-a"))
        watched = frozenset({"handed", "mine"})  # snapshots go in id order
        stream = event_stream(ctx, watched, None, {"handed": 0, "mine": 0}, "tenant-a")
        first = [await anext(stream), await anext(stream)]  # retry, then the first snapshot
        await stream.aclose()
        assert b'"job_id":"mine"' in first[1], first
        assert not [c for c in first if b"B-ONLY" in c or b"tenant-b" in c], first
    finally:
        await ctx.aclose()
