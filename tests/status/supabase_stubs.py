"""Just enough of Supabase's database setup for our migrations to apply to a bare PostgreSQL.

Supabase provides the roles `anon`, `authenticated` and `service_role` (the last with
BYPASSRLS) and the `auth` schema functions that read the request's JWT claims, which
PostgREST puts in the `request.jwt.claims` setting. These stubs behave the same way.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = REPO_ROOT / "supabase" / "migrations"
STATUS_MIGRATION = MIGRATIONS / "20261123000000_ingestion_jobs.sql"
# Every migration of the status table, in the order the Supabase CLI applies them.
STATUS_MIGRATIONS = (
    STATUS_MIGRATION,
    MIGRATIONS / "20261201000100_status_snapshots.sql",
    MIGRATIONS / "20261201000500_status_replace_rows_ahead.sql",
    MIGRATIONS / "20261201000600_status_rows_know_their_queue.sql",
    MIGRATIONS / "20261201000700_status_writes_wait_for_a_row_lock_briefly.sql",
)

# Roles are cluster-wide and other tests create them concurrently: tolerate the race.
_ROLES = """
do $$
declare r text;
begin
    foreach r in array array['anon', 'authenticated', 'service_role'] loop
        begin
            if not exists (select 1 from pg_roles where rolname = r) then
                execute format('create role %I nologin', r);
            end if;
        exception when duplicate_object or unique_violation then null;
        end;
    end loop;
    begin
        alter role service_role bypassrls;
    exception when others then null;
    end;
end $$;
"""

_AUTH = """
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;
grant usage on schema public to anon, authenticated, service_role;

create or replace function auth.jwt() returns jsonb language sql stable as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

create or replace function auth.uid() returns uuid language sql stable as $$
    select nullif(
        coalesce(
            current_setting('request.jwt.claim.sub', true),
            (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        ), ''
    )::uuid
$$;

create or replace function auth.role() returns text language sql stable as $$
    select coalesce(
        current_setting('request.jwt.claim.role', true),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )
$$;
"""


def install_stubs(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_ROLES)
        conn.execute(_AUTH)


def apply_migration(dsn: str, path: Path = STATUS_MIGRATION) -> None:
    """Run one migration file as the Supabase CLI would: the whole file in one transaction."""
    sql = path.read_text()
    with psycopg.connect(dsn) as conn:
        conn.execute(sql)  # type: ignore[arg-type]  # a file we ship, not user input


def prepare_database(dsn: str, *migrations: Path) -> None:
    install_stubs(dsn)
    for path in migrations or STATUS_MIGRATIONS:
        apply_migration(dsn, path)
