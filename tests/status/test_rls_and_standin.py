"""Row level security through the real supabase client and the PostgREST stand-in, the
stand-in's strictness, and the migration's own guarantees."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from postgrest.exceptions import APIError
from supabase import AsyncClientOptions, acreate_client

from supervisor.status import StatusUpdate, build_status_backend
from tests.status.postgrest_standin import (
    StandIn,
    anon_key,
    make_jwt,
    service_key,
    start_standin,
    tenant_token,
)
from tests.status.supabase_stubs import STATUS_MIGRATION, apply_migration, install_stubs

T0 = 1_700_000_000.0


def row(job: str, tenant: str, status: str = "processing") -> StatusUpdate:
    return StatusUpdate(
        job_id=job,
        tenant_id=tenant,
        status=status,
        attempt=1,
        seq_run=T0,
        rev=2,
        started_at=T0 + 1,
        progress=10.0,
    )


async def user_client(url: str, token: str) -> Any:
    """What a web app holds: the anon key as apikey, the user's access token as bearer."""
    options = AsyncClientOptions(headers={"Authorization": f"Bearer {token}"})
    return await acreate_client(url, anon_key(), options=options)


async def seed(url: str) -> None:
    backend = build_status_backend("supabase", supabase_url=url, supabase_key=service_key())
    try:
        await backend.apply(
            [row("a-1", "tenant-a"), row("a-2", "tenant-a", "queued"), row("b-1", "tenant-b")]
        )
    finally:
        await backend.aclose()


async def test_tenant_reads_only_its_rows_and_cannot_write(standin: StandIn) -> None:
    await seed(standin.url)
    client = await user_client(standin.url, tenant_token("tenant-a"))
    mine = await client.table("ingestion_jobs").select("*").order("job_id").execute()
    assert [r["job_id"] for r in mine.data] == ["a-1", "a-2"]
    other = await client.table("ingestion_jobs").select("*").eq("job_id", "b-1").execute()
    assert other.data == []
    by_status = (
        await client.table("ingestion_jobs")
        .select("job_id,status")
        .eq("tenant_id", "tenant-a")
        .eq("status", "queued")
        .execute()
    )
    assert by_status.data == [{"job_id": "a-2", "status": "queued"}]

    with pytest.raises(APIError) as err:
        await client.rpc(
            "apply_job_status", {"updates": [row("b-1", "tenant-b", "failed").to_json()]}
        ).execute()
    assert err.value.code == "42501"

    service = await acreate_client(standin.url, service_key())
    everything = await service.table("ingestion_jobs").select("job_id").order("job_id").execute()
    assert [r["job_id"] for r in everything.data] == ["a-1", "a-2", "b-1"]
    b1 = await service.table("ingestion_jobs").select("status").eq("job_id", "b-1").execute()
    assert b1.data == [{"status": "processing"}]  # the tenant's write changed nothing


async def test_anon_and_users_without_tenant_see_nothing(standin: StandIn) -> None:
    await seed(standin.url)
    anon = await acreate_client(standin.url, anon_key())
    with pytest.raises(APIError) as err:
        await anon.table("ingestion_jobs").select("*").execute()
    assert err.value.code == "42501"
    nobody = await user_client(standin.url, make_jwt("authenticated", sub="u1"))
    assert (await nobody.table("ingestion_jobs").select("*").execute()).data == []


def test_direct_sql_writes_as_a_user_are_refused(status_db: str) -> None:
    with psycopg.connect(status_db) as conn:
        conn.execute("set role authenticated")
        conn.execute(
            "select set_config('request.jwt.claims', %s, false)",
            ['{"role":"authenticated","app_metadata":{"tenant_id":"tenant-a"}}'],
        )
        for stmt in (
            "insert into public.ingestion_jobs (job_id, tenant_id, status) "
            "values ('x', 'tenant-a', 'queued')",
            "update public.ingestion_jobs set status = 'failed'",
            "delete from public.ingestion_jobs",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(stmt)  # type: ignore[arg-type]
            conn.rollback()
            conn.execute("set role authenticated")


async def test_standin_rejects_what_postgrest_would(standin: StandIn) -> None:
    key = service_key()
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=standin.url + "/rest/v1", headers=headers) as http:
        cases = [
            (await http.get("/no_such_table"), 404, "PGRST205"),
            (await http.post("/rpc/drop_everything", json={}), 404, "PGRST202"),
            (await http.post("/rpc/apply_job_status", json={"wrong": 1}), 404, "PGRST202"),
            (await http.post("/rpc/apply_job_status", content=b"{nope"), 400, "PGRST102"),
            (await http.post("/rpc/apply_job_status", json={"updates": {}}), 400, "22023"),
            (await http.get("/ingestion_jobs", params={"job_id": "like.x*"}), 400, "PGRST100"),
            (await http.get("/ingestion_jobs", params={"nope": "eq.1"}), 400, "42703"),
            (
                await http.get("/ingestion_jobs", params={"order": "job_id.sideways"}),
                400,
                "PGRST100",
            ),
            (await http.patch("/ingestion_jobs", json={"status": "failed"}), 405, "PGRST117"),
            (await http.post("/ingestion_jobs", json={"job_id": "x"}), 405, "PGRST117"),
        ]
        bad_jwt = await http.get(
            "/ingestion_jobs",
            headers={"Authorization": "Bearer " + make_jwt("service_role", secret="x" * 40)},
        )
        cases.append((bad_jwt, 401, "PGRST301"))
        no_key = await httpx.AsyncClient().get(standin.url + "/rest/v1/ingestion_jobs")
        cases.append((no_key, 401, "PGRST302"))
    for response, status, code in cases:
        body = response.json()
        assert (response.status_code, body["code"]) == (status, code), response.request.url
        assert set(body) == {"code", "message", "details", "hint"}


def test_start_standin_helper_and_rpc_result(status_db: str) -> None:
    url, stop = start_standin(status_db)
    try:
        key = service_key()
        r = httpx.post(
            url + "/rest/v1/rpc/apply_job_status",
            headers={"apikey": key, "Authorization": f"Bearer {key}"},
            json={"updates": [row("h-1", "t").to_json()]},
        )
        assert (r.status_code, r.json()) == (200, 1)
        r = httpx.get(
            url + "/rest/v1/ingestion_jobs",
            params={"select": "job_id,progress", "job_id": "eq.h-1", "limit": "1"},
            headers={"apikey": key, "Authorization": f"Bearer {key}"},
        )
        assert r.json() == [{"job_id": "h-1", "progress": 10}]
    finally:
        stop()


def test_migration_is_rerunnable_and_joins_realtime_publication(pg_dsn: str) -> None:
    install_stubs(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("create publication supabase_realtime")
    apply_migration(pg_dsn, STATUS_MIGRATION)
    apply_migration(pg_dsn, STATUS_MIGRATION)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        published = conn.execute(
            "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
        ).fetchall()
        assert published == [("ingestion_jobs",)]
        assert conn.execute(
            "select relrowsecurity from pg_class where oid = 'public.ingestion_jobs'::regclass"
        ).fetchone() == (True,)
        conn.execute(
            "insert into public.ingestion_jobs (job_id, tenant_id, status, updated_at) "
            "values ('u', 't', 'queued', '2000-01-01')"
        )
        before = conn.execute("select updated_at from public.ingestion_jobs").fetchone()
        conn.execute("update public.ingestion_jobs set progress = 5")
        after = conn.execute("select updated_at from public.ingestion_jobs").fetchone()
        assert before is not None and after is not None and after[0] >= before[0]
        assert before[0].year > 2000  # the trigger owns updated_at
        for bad in (
            "insert into public.ingestion_jobs (job_id, tenant_id, status) values ('v','t','done')",
            "insert into public.ingestion_jobs (job_id, tenant_id, status, progress) "
            "values ('v','t','queued', 101)",
            "insert into public.ingestion_jobs (job_id, tenant_id, status, error) "
            f"values ('v','t','failed', '{'e' * 1001}')",
        ):
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute(bad)  # type: ignore[arg-type]


def test_auto_backend_choice(tmp_path: Any) -> None:
    assert build_status_backend("auto", supabase_url="http://x", supabase_key="k").name == (
        "supabase"
    )
    assert build_status_backend("auto", dsn="postgresql://x/y").name == "postgres"
    assert build_status_backend("auto", sqlite_path=str(tmp_path / "s.db")).name == "sqlite"
    assert build_status_backend("none").name == "none"
    with pytest.raises(ValueError):
        build_status_backend("postgres")
    with pytest.raises(ValueError):
        build_status_backend("mongo")
