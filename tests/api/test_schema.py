"""Schemathesis against the live OpenAPI document: no server error on any generated input.

Runs the real `st` CLI against a real uvicorn process on a private redis-server (generated
requests purge and cancel freely, so they must not touch the shared Redis).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from supervisor.queue.keys import QueueKeys
from supervisor.queue.workers import WorkerRegistry
from tests.api.conftest import TOKEN, ServerFactory
from tests.redis_server import PrivateRedis


def st_command() -> list[str]:
    exe = shutil.which("st", path=str(Path(sys.executable).parent))
    assert exe is not None, "schemathesis is a test dependency"
    return [exe]


async def test_no_server_error_on_generated_input(
    api_server: ServerFactory, own_redis: PrivateRedis, tmp_path: Path
) -> None:
    server = api_server(REDIS_URL=own_redis.url, INGEST_API_AUTH_READS="1")
    # A live supervisor, so /health/queue answers 200 and any 5xx is a real fault.
    client = Redis.from_url(own_redis.url)
    await WorkerRegistry(client, QueueKeys(server.queue)).beat(
        "schema-host:i1:1", {"slots": 2}, 600
    )
    await client.aclose()

    cmd = [
        *st_command(),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--exclude-path",
        "/events",  # an endless stream; tested in test_events.py
        "--checks",
        "all",
        # Schema-valid but rejected: JSON Schema calls 1.0 an integer and cannot say "job ids
        # distinct within a batch"; the protocol's validator is stricter, by design.
        "--exclude-checks",
        "positive_data_acceptance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "10",
        "--seed",
        "20240611",
        "--request-timeout",
        "10",
        # One worker: hypothesis' lambda introspection (ast.parse) is not thread-safe on 3.11.
        "--workers",
        "1",
    ]
    proc = await asyncio.to_thread(
        subprocess.run, cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert "Server error" not in proc.stdout
