"""Fixtures for the status table: a migrated throwaway database, the PostgREST stand-in,
and one `store` fixture that runs a test against each backend (supabase through the
stand-in, postgres directly, sqlite)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis

from supervisor.queue.jobqueue import Backoff, JobQueue
from supervisor.status import StatusBackend, build_status_backend
from tests.conftest import REDIS_URL
from tests.status.postgrest_standin import StandIn, service_key
from tests.status.supabase_stubs import prepare_database
from tests.status.tcp_proxy import TcpProxy


@pytest.fixture
def status_db(pg_dsn: str) -> str:
    """A throwaway database with Supabase's auth stubs and the ingestion_jobs migration."""
    prepare_database(pg_dsn)
    return pg_dsn


@pytest.fixture
def standin(status_db: str) -> Iterator[StandIn]:
    """The loopback PostgREST stand-in over `status_db`; `.url` is the Supabase URL."""
    server = StandIn(status_db)
    yield server
    server.stop()


@dataclass
class Store:
    """One backend kind under test, able to make fresh backends and to go down and up."""

    kind: str
    make: Callable[[], StatusBackend]
    cut: Callable[[], None]
    restore: Callable[[], None]
    dsn: str | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def backend(self) -> StatusBackend:
        return self.make()


def _with_port(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def _supabase_store(dsn: str) -> Store:
    holder: dict[str, StandIn] = {"server": StandIn(dsn)}
    url, port = holder["server"].url, holder["server"].port

    def cut() -> None:
        holder["server"].stop()

    def restore() -> None:
        holder["server"] = StandIn(dsn, port=port)

    store = Store(
        "supabase",
        lambda: build_status_backend(
            "supabase", supabase_url=url, supabase_key=service_key(), timeout_s=2.0
        ),
        cut,
        restore,
        dsn=dsn,
    )
    store.cleanup.append(lambda: holder["server"].stop())
    return store


def _postgres_store(dsn: str) -> Store:
    target = urlsplit(dsn)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    proxy.start()
    proxied = _with_port(dsn, proxy.port)
    store = Store(
        "postgres",
        lambda: build_status_backend("postgres", dsn=proxied, timeout_s=2.0),
        proxy.cut,
        proxy.start,
        dsn=dsn,
    )
    store.cleanup.append(proxy.cut)
    return store


def _sqlite_store(path: Path) -> Store:
    import sqlite3

    blocker: dict[str, sqlite3.Connection] = {}

    def cut() -> None:
        # Another process holding the write lock: SQLite's way of being unavailable.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("begin exclusive")
        blocker["conn"] = conn

    def restore() -> None:
        conn = blocker.pop("conn")
        conn.execute("rollback")
        conn.close()

    store = Store(
        "sqlite",
        lambda: build_status_backend("sqlite", sqlite_path=str(path), timeout_s=0.5),
        cut,
        restore,
    )

    def release_if_cut() -> None:
        if blocker:
            restore()

    store.cleanup.append(release_if_cut)
    return store


@pytest.fixture(params=["supabase", "postgres", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kind = request.param
    if kind == "sqlite":
        made = _sqlite_store(tmp_path / "status.sqlite3")
    else:
        dsn = request.getfixturevalue("status_db")
        made = _supabase_store(dsn) if kind == "supabase" else _postgres_store(dsn)
    yield made
    for fn in made.cleanup:
        fn()


@pytest.fixture
async def queue(queue_name: str) -> AsyncIterator[JobQueue]:
    """The test's queue on the real Redis; retries are due almost at once."""
    client = Redis.from_url(REDIS_URL)
    yield JobQueue(client, queue_name, backoff=Backoff(base_s=0.01, jitter=0))
    await client.aclose()


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[StatusBackend]:
    backend = build_status_backend("sqlite", sqlite_path=str(tmp_path / "s.sqlite3"))
    yield backend
    await backend.aclose()
