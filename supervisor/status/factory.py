"""Choosing a status store from settings. Each backend module is imported only when
chosen, so a store's client library (psycopg, supabase) is needed only where it is used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supervisor.status.backend import NoneBackend, StatusBackend

BACKEND_KINDS = ("auto", "supabase", "postgres", "sqlite", "none")
DEFAULT_SQLITE_PATH = "var/ingest-status.sqlite3"


def build_status_backend(
    kind: str,
    *,
    supabase_url: str | None = None,
    supabase_key: str | None = None,
    dsn: str | None = None,
    sqlite_path: str | None = None,
    timeout_s: float = 5.0,
) -> StatusBackend:
    """A backend of `kind`; `auto` picks supabase when URL and key are set, else postgres
    when a DSN is set, else a local sqlite file. Nothing connects until the first write."""
    if kind not in BACKEND_KINDS:
        raise ValueError(f"status backend must be one of {', '.join(BACKEND_KINDS)}")
    if kind == "auto":
        if supabase_url and supabase_key:
            kind = "supabase"
        elif dsn:
            kind = "postgres"
        else:
            kind = "sqlite"
    if kind == "none":
        return NoneBackend()
    if kind == "supabase":
        if not (supabase_url and supabase_key):
            raise ValueError("the supabase status backend needs SUPABASE_URL and a key")
        from supervisor.status.supabase_backend import SupabaseBackend

        return SupabaseBackend(supabase_url, supabase_key, timeout_s=timeout_s)
    if kind == "postgres":
        if not dsn:
            raise ValueError("the postgres status backend needs INGEST_STATUS_DSN")
        from supervisor.status.postgres_backend import PostgresBackend

        return PostgresBackend(dsn, timeout_s=timeout_s)
    from supervisor.status.sqlite_backend import SqliteBackend

    return SqliteBackend(Path(sqlite_path or DEFAULT_SQLITE_PATH), timeout_s=timeout_s)


def open_backend(settings: Any) -> StatusBackend:
    """The backend a `supervisor.settings.Settings` describes (used by the API and ingestctl)."""
    return build_status_backend(
        settings.status_backend,
        supabase_url=settings.supabase_url,
        supabase_key=settings.supabase_key,
        dsn=settings.status_dsn,
        sqlite_path=settings.status_sqlite_path,
    )
