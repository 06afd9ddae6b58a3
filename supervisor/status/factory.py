"""Choosing a status store from settings. Each backend module is imported only when
chosen, so a store's client library (psycopg, supabase) is needed only where it is used."""

from __future__ import annotations

from pathlib import Path

from supervisor.config import DEFAULT_STATUS_SQLITE_PATH, STATUS_BACKENDS, SharedConfig
from supervisor.extras import PSYCOPG, require
from supervisor.status.backend import NoneBackend, StatusBackend

BACKEND_KINDS = STATUS_BACKENDS


def resolve_kind(
    kind: str,
    *,
    supabase_url: str | None = None,
    supabase_key: str | None = None,
    dsn: str | None = None,
) -> str:
    """The store `kind` means: `auto` picks supabase when URL and key are set, else postgres
    when a DSN is set, else a local sqlite file."""
    if kind not in BACKEND_KINDS:
        raise ValueError(f"status backend must be one of {', '.join(BACKEND_KINDS)}")
    if kind != "auto":
        return kind
    if supabase_url and supabase_key:
        return "supabase"
    return "postgres" if dsn else "sqlite"


def check_extras(
    kind: str,
    *,
    supabase_url: str | None = None,
    supabase_key: str | None = None,
    dsn: str | None = None,
) -> None:
    """Raise MissingExtraError when the store `kind` picks needs a package not installed."""
    resolved = resolve_kind(kind, supabase_url=supabase_url, supabase_key=supabase_key, dsn=dsn)
    if resolved == "postgres":
        setting = (
            "INGEST_STATUS_BACKEND=postgres"
            if kind == "postgres"
            else "INGEST_STATUS_DSN (INGEST_STATUS_BACKEND=auto picks postgres)"
        )
        require(setting, PSYCOPG)


def build_status_backend(
    kind: str,
    *,
    supabase_url: str | None = None,
    supabase_key: str | None = None,
    dsn: str | None = None,
    sqlite_path: str | None = None,
    timeout_s: float = 5.0,
) -> StatusBackend:
    """A backend of `kind` (see `resolve_kind`). Nothing connects until the first write."""
    check_extras(kind, supabase_url=supabase_url, supabase_key=supabase_key, dsn=dsn)
    kind = resolve_kind(kind, supabase_url=supabase_url, supabase_key=supabase_key, dsn=dsn)
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

    return SqliteBackend(Path(sqlite_path or DEFAULT_STATUS_SQLITE_PATH), timeout_s=timeout_s)


def check_settings_extras(settings: SharedConfig) -> None:
    """`check_extras` for the store the shared settings describe."""
    check_extras(
        settings.status_backend,
        supabase_url=settings.supabase_url,
        supabase_key=settings.supabase_key,
        dsn=settings.status_dsn,
    )


def open_backend(settings: SharedConfig) -> StatusBackend:
    """The backend the shared settings describe (used by ingestctl)."""
    return build_status_backend(
        settings.status_backend,
        supabase_url=settings.supabase_url,
        supabase_key=settings.supabase_key,
        dsn=settings.status_dsn,
        sqlite_path=settings.status_sqlite_path,
    )
