"""Fixtures shared by every test area: the real local Redis and PostgreSQL, unique names."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

if TYPE_CHECKING:
    from tests.redis_server import PrivateRedis

REPO_ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("INGEST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_DSN = os.environ.get("INGEST_TEST_PG_DSN", "postgresql://root@127.0.0.1:5432/test")


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A queue name no other test uses; its keys are deleted afterwards (never FLUSHDB)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"ingest:{{{name}}}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A throwaway PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    from tests.redis_server import PrivateRedis

    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.close()
