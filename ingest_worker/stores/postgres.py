"""PostgreSQL chunk store over psycopg: one call of the migration's
`replace_document_chunks`, which deletes and inserts in the caller's transaction."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ingest_worker.errors import ConfigError, TempFail
from ingest_worker.stores.errors import dimension_error, is_pgvector_size_error

if TYPE_CHECKING:
    import psycopg


class PostgresStore:
    name = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def replace(self, job_id: str, tenant_id: str, chunks: list[dict[str, Any]]) -> int:
        import psycopg
        from psycopg import errors

        payload = json.dumps(chunks, separators=(",", ":"))
        conn = _connect(self.dsn)
        try:
            with conn:
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


def _connect(dsn: str) -> psycopg.Connection[Any]:
    """A connection to the operator's chunk store. What goes wrong here is named, never
    quoted: the message becomes the job's error, which its tenant reads, and libpq quotes
    the pieces of a DSN it cannot parse (a password among them) and the host it could not
    reach."""
    import psycopg

    try:
        return psycopg.connect(dsn, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise TempFail(
            f"postgres chunk store unavailable: cannot connect with INGEST_CHUNK_DSN ({_kind(exc)})"
        ) from None
    except psycopg.Error as exc:
        raise ConfigError(
            f"chunk store: INGEST_CHUNK_DSN is not a usable connection string ({_kind(exc)})"
        ) from None


def _kind(exc: BaseException) -> str:
    sqlstate = getattr(exc, "sqlstate", None)
    return exc.__class__.__name__ + (f", SQLSTATE {sqlstate}" if sqlstate else "")


def _first_line(exc: BaseException) -> str:
    # A statement's error can quote the statement's parameters on later lines; keep the
    # reason only.
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
