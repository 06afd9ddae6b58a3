"""The supabase backend: the official client's .rpc() against the loopback PostgREST
stand-in (tests/status), which runs the migration's function as service_role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.status.postgrest_standin import StandIn, anon_key, service_key
from tests.status.supabase_stubs import install_stubs
from tests.worker.conftest import apply_migration, make_job, run_worker


@pytest.fixture
def standin(pg_dsn: str) -> Iterator[StandIn]:
    install_stubs(pg_dsn)
    apply_migration(pg_dsn)  # after the roles exist, so its grants apply
    server = StandIn(pg_dsn)
    yield server
    server.stop()


def test_supabase_store_replaces_a_jobs_chunks(
    standin: StandIn, pg_dsn: str, workdir: Path
) -> None:
    env = {
        "INGEST_CHUNK_SUPABASE_URL": standin.url,
        "INGEST_CHUNK_SUPABASE_KEY": service_key(),
        "INGEST_CHUNK_SIZE": "200",
        "INGEST_CHUNK_OVERLAP": "20",
    }
    job = make_job({"type": "text", "text": "waves and wind " * 80}, job_id="sb-1")
    first = run_worker(job, workdir, **env)
    assert first.code == 0, first.stderr
    assert first.result["store"] == "supabase" and first.result["chunks"] > 3
    again = run_worker(job, workdir, **env, INGEST_ATTEMPT="2")
    assert again.code == 0, again.stderr
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "select chunk_index, tenant_id from document_chunks where job_id = 'sb-1'"
            " order by chunk_index"
        ).fetchall()
    assert rows == [(i, "tenant-a") for i in range(again.result["chunks"])]
    assert ("POST", "/rest/v1/rpc/replace_document_chunks") in [
        (m, p.split("?")[0]) for m, p in standin.requests
    ]


def test_supabase_store_refuses_the_anon_role_and_an_unreachable_server(
    standin: StandIn, workdir: Path
) -> None:
    job = make_job({"type": "text", "text": "hello"})
    anon = run_worker(
        job, workdir, INGEST_CHUNK_SUPABASE_URL=standin.url, INGEST_CHUNK_SUPABASE_KEY=anon_key()
    )
    assert anon.code == 78 and "service-role key" in anon.stderr, anon.stderr
    down = run_worker(
        job,
        workdir,
        INGEST_CHUNK_SUPABASE_URL="http://127.0.0.1:1",
        INGEST_CHUNK_SUPABASE_KEY=service_key(),
    )
    assert down.code == 75 and "unavailable" in down.stderr
