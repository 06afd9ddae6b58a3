"""Table privileges under Supabase's default grants: what RLS cannot guard is revoked."""

from __future__ import annotations

import psycopg
import pytest

from tests.status.supabase_stubs import MIGRATIONS, apply_migration, install_stubs

# What Supabase's database setup does for every table the migrations create.
SUPABASE_DEFAULT_PRIVILEGES = "\n".join(
    f"alter default privileges in schema public grant all on {kind}"
    " to anon, authenticated, service_role;"
    for kind in ("tables", "sequences", "functions")
)


@pytest.fixture
def supabase_like_db(pg_dsn: str) -> str:
    install_stubs(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(SUPABASE_DEFAULT_PRIVILEGES)
    for path in sorted(MIGRATIONS.glob("*.sql")):
        apply_migration(pg_dsn, path)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "insert into document_chunks (job_id, tenant_id, chunk_index, source, content,"
            " embedding) values ('j-1', 'tenant-a', 0, 'text', 'secret words', '{1,2}')"
        )
    return pg_dsn


def _as(dsn: str, role: str, sql: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"set local role {role}")  # type: ignore[arg-type]  # fixed role names
        conn.execute(sql)  # type: ignore[arg-type]  # fixed statements from this file


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize(
    "sql",
    [
        "truncate document_chunks",
        "create table t_ref (c bigint references document_chunks (id))",
        "create trigger t after insert on document_chunks"
        " for each row execute function pg_catalog.suppress_redundant_updates_trigger()",
        "select nextval(pg_get_serial_sequence('document_chunks', 'id'))",
        "insert into document_chunks (job_id, tenant_id, chunk_index, source, content, embedding)"
        " values ('j-2', 'tenant-a', 0, 'text', 'x', '{1}')",
        "delete from document_chunks",
    ],
)
def test_user_roles_cannot_truncate_or_write_chunks(
    supabase_like_db: str, role: str, sql: str
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as(supabase_like_db, role, sql)
    with psycopg.connect(supabase_like_db) as conn:
        row = conn.execute("select count(*) from document_chunks").fetchone()
    assert row == (1,)


def test_authenticated_reads_only_through_rls_and_anon_not_at_all(supabase_like_db: str) -> None:
    with psycopg.connect(supabase_like_db) as conn:
        conn.execute("set local role authenticated")
        # Granted, but no policy admits a row until a deployment adds one.
        assert conn.execute("select count(*) from document_chunks").fetchone() == (0,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _as(supabase_like_db, "anon", "select 1 from document_chunks")
    with psycopg.connect(supabase_like_db) as conn:
        conn.execute("set local role service_role")
        assert conn.execute("select count(*) from document_chunks").fetchone() == (1,)
