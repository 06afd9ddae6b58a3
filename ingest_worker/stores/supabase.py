"""Supabase chunk store: the official client calling the `replace_document_chunks` RPC."""

from __future__ import annotations

from typing import Any

from ingest_worker.errors import ConfigError, TempFail
from ingest_worker.stores.errors import dimension_error, is_pgvector_size_error


class SupabaseStore:
    name = "supabase"

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self._key = key

    def replace(self, job_id: str, tenant_id: str, chunks: list[dict[str, Any]]) -> int:
        import httpx
        from postgrest.exceptions import APIError
        from supabase import create_client

        try:
            client = create_client(self.url, self._key)
            response = client.rpc(
                "replace_document_chunks",
                {"p_job_id": job_id, "p_tenant_id": tenant_id, "p_chunks": chunks},
            ).execute()
        except APIError as exc:
            code = str(getattr(exc, "code", "") or "")
            if code in ("PGRST202", "42883"):
                raise ConfigError(
                    "chunk store: replace_document_chunks() is missing in Supabase; apply "
                    "supabase/migrations/20261123000100_document_chunks.sql"
                ) from None
            if code in ("42501", "PGRST301", "PGRST302"):
                raise ConfigError(
                    f"chunk store: Supabase refused the key for replace_document_chunks ({code}); "
                    "INGEST_CHUNK_SUPABASE_KEY must be a service-role key"
                ) from None
            reason = getattr(exc, "message", None) or code
            if code == "23514" and "document_chunks_embedding_dimension" in str(reason):
                raise dimension_error(chunks, str(reason)) from None
            if code == "22000" and is_pgvector_size_error(str(reason)):
                raise dimension_error(chunks, str(reason)) from None
            raise TempFail(f"supabase chunk store failed: {reason}") from None
        except (httpx.HTTPError, OSError) as exc:
            raise TempFail(f"supabase chunk store unavailable: {exc.__class__.__name__}") from None
        data = response.data
        return (
            int(data)
            if isinstance(data, int | float | str) and str(data).isdigit()
            else len(chunks)
        )
