"""PostgreSQL chunk store over psycopg: one call of the migration's
`replace_document_chunks`, which deletes and inserts in the caller's transaction."""

from __future__ import annotations

import json
from typing import Any

from ingest_worker.errors import ConfigError, TempFail
from ingest_worker.stores.errors import dimension_error, is_pgvector_size_error


class PostgresStore:
    name = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def replace(self, job_id: str, tenant_id: str, chunks: list[dict[str, Any]]) -> int:
        import psycopg
        from psycopg import errors

        payload = json.dumps(chunks, separators=(",", ":"))
        try:
            with psycopg.connect(self.dsn, connect_timeout=10) as conn:
                row = conn.execute(
                    "select public.replace_document_chunks(%s, %s, %s::jsonb)",
                    (job_id, tenant_id, payload),
                ).fetchone()
        except errors.UndefinedFunction:
            raise ConfigError(
                "chunk store: replace_document_chunks() is missing; apply "
                "supabase/migrations/20261123000100_document_chunks.sql"
            ) from None
        except (errors.CheckViolation, errors.DataException) as exc:
            mismatch = dimension_mismatch(exc, chunks)
            if mismatch is None:
                raise TempFail(f"postgres chunk store failed: {_first_line(exc)}") from None
            raise mismatch from None
        except psycopg.OperationalError as exc:
            raise TempFail(f"postgres chunk store unavailable: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            raise TempFail(f"postgres chunk store failed: {_first_line(exc)}") from None
        return int(row[0]) if row else 0


def _first_line(exc: BaseException) -> str:
    # psycopg errors can quote the DSN's parameters on later lines; keep the reason only.
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]


def dimension_mismatch(exc: BaseException, chunks: list[dict[str, Any]]) -> ConfigError | None:
    """A ConfigError when `exc` is the column refusing the vectors' size, else None."""
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    reason = _first_line(exc)
    # pgvector: "expected 1536 dimensions, not 384"; real[]: the migration's check.
    if constraint == "document_chunks_embedding_dimension" or is_pgvector_size_error(reason):
        return dimension_error(chunks, reason)
    return None
