"""`enqueue_ingestion_job`: the Python client other services call, straight to real Redis."""

from __future__ import annotations

import pytest
import redis

from supervisor.queue.client import enqueue_ingestion_job, enqueue_ingestion_job_async
from supervisor.queue.keys import QueueKeys
from supervisor.queue.payload import PayloadError
from tests.api.conftest import ServerFactory


def test_sync_client_enqueues_idempotently_and_api_sees_it(
    api_server: ServerFactory, redis_url: str
) -> None:
    server = api_server()
    res = enqueue_ingestion_job(
        "client-1",
        "tenant-a",
        {"type": "crawl", "url": "https://docs.test", "trial_token": "tt-client-secret"},
        priority="high",
        metadata={"source": "test"},
        max_attempts=5,
        queue=server.queue,
        redis_url=redis_url,
    )
    assert (res.job_id, res.created, res.state.value) == ("client-1", True, "waiting")
    again = enqueue_ingestion_job(
        "client-1", "tenant-a", {"type": "text"}, queue=server.queue, redis_url=redis_url
    )
    assert again.created is False

    with server.client() as http:
        view = http.get("/jobs/client-1").json()
    assert view["priority"] == "high" and view["max_attempts"] == 5
    assert view["payload"]["data_source"]["trial_token"] == "[redacted]"


def test_sync_client_rejects_invalid_payload_and_stores_nothing(
    queue_name: str, redis_url: str
) -> None:
    with pytest.raises(PayloadError) as err:
        enqueue_ingestion_job(
            "ok-id", "tenant-a", {"type": "ftp"}, queue=queue_name, redis_url=redis_url
        )
    assert err.value.field == "data_source.type"
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.hlen(QueueKeys(queue_name).jobs) == 0
    finally:
        client.close()


def test_the_client_refuses_keys_json_would_turn_into_strings(
    queue_name: str, redis_url: str
) -> None:
    """{1: a, "1": b} would be stored with one key twice, and read back with one of them
    lost: keys that are not strings are refused, naming where, and nothing is stored."""
    with pytest.raises(PayloadError) as err:
        enqueue_ingestion_job(
            "keys-id",
            "tenant-a",
            {"type": "text", "text": "x"},
            metadata={1: "int key", "1": "str key"},
            queue=queue_name,
            redis_url=redis_url,
        )
    assert err.value.field == "metadata" and "strings" in str(err.value)
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.hlen(QueueKeys(queue_name).jobs) == 0
    finally:
        client.close()


async def test_async_client_and_sync_guard(queue_name: str, redis_url: str) -> None:
    res = await enqueue_ingestion_job_async(
        "async-1",
        "tenant-a",
        {"type": "text", "text": "hi"},
        queue=queue_name,
        redis_url=redis_url,
        delay_s=60,
    )
    assert res.created and res.state.value == "delayed"
    with pytest.raises(RuntimeError, match="enqueue_ingestion_job_async"):
        enqueue_ingestion_job("x", "t", {"type": "text"}, queue=queue_name, redis_url=redis_url)
