"""Chunk stores. Each replaces all of one job's chunks atomically, so a retried job never
duplicates rows. Backends other than `none` are imported only when configured."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from ingest_worker.config import WorkerConfig

    class ChunkStore(Protocol):
        name: str

        def replace(self, job_id: str, tenant_id: str, chunks: list[dict[str, Any]]) -> int:
            """Delete the job's chunks and insert these, in one transaction; return the count."""


class NoStore:
    """Counts chunks and keeps nothing: the default when no store is configured."""

    name = "none"

    def replace(self, job_id: str, tenant_id: str, chunks: list[dict[str, Any]]) -> int:
        return len(chunks)


def open_store(config: WorkerConfig) -> ChunkStore:
    if config.store == "sqlite":
        from ingest_worker.stores.sqlite import SqliteStore

        assert config.sqlite_path is not None
        return SqliteStore(config.sqlite_path)
    if config.store == "postgres":
        from ingest_worker.stores.postgres import PostgresStore

        assert config.store_dsn is not None
        return PostgresStore(config.store_dsn)
    if config.store == "supabase":
        from ingest_worker.stores.supabase import SupabaseStore

        assert config.supabase_url is not None and config.supabase_key is not None
        return SupabaseStore(config.supabase_url, config.supabase_key)
    return NoStore()
