"""SQLite chunk store: one file, table created on first use, embeddings as JSON text."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from ingest_worker.errors import TempFail
from ingest_worker.stores.errors import dimension_error

_SCHEMA = """
create table if not exists document_chunks (
    job_id      text    not null,
    tenant_id   text    not null,
    chunk_index integer not null,
    source      text    not null,
    content     text    not null,
    embedding   text    not null,
    metadata    text    not null,
    created_at  text    not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    primary key (tenant_id, job_id, chunk_index)
);
create index if not exists document_chunks_tenant on document_chunks (tenant_id);
"""
# Files made before chunks were keyed by tenant have (job_id, chunk_index) as their key:
# rebuilt once, in the transaction of the first write that finds them.
_REKEY = """
alter table document_chunks rename to document_chunks_old;
drop index if exists document_chunks_tenant;
""" + _SCHEMA + """
insert into document_chunks select * from document_chunks_old;
drop table document_chunks_old;
"""


class SqliteStore:
    name = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path

    def replace(self, job_id: str, tenant_id: str, chunks: list[dict[str, Any]]) -> int:
        rows = [
            (
                job_id,
                tenant_id,
                c["chunk_index"],
                c["source"],
                c["content"],
                json.dumps(c["embedding"], separators=(",", ":")),
                json.dumps(c["metadata"], separators=(",", ":")),
            )
            for c in chunks
        ]
        try:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise TempFail(f"sqlite chunk store unavailable: {exc}") from None
        try:
            conn.executescript(_SCHEMA)
            # BEGIN IMMEDIATE takes the write lock up front: no upgrade deadlock between
            # two retries of the same job racing each other.
            conn.execute("begin immediate")
            if not _keyed_by_tenant(conn):
                for statement in _REKEY.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            _check_dimension(conn, job_id, tenant_id, chunks)
            conn.execute(
                "delete from document_chunks where tenant_id = ? and job_id = ?",
                (tenant_id, job_id),
            )
            conn.executemany(
                "insert into document_chunks (job_id, tenant_id, chunk_index, source, content,"
                " embedding, metadata) values (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("commit")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("rollback")
            raise TempFail(f"sqlite chunk store failed: {exc}") from None
        finally:
            conn.close()
        return len(rows)


def _check_dimension(
    conn: sqlite3.Connection, job_id: str, tenant_id: str, chunks: list[dict[str, Any]]
) -> None:
    """The file's vectors all have one size, set by the first job stored: a search over
    mixed sizes is meaningless, so another size is refused as configuration (the caller's
    close discards the open transaction)."""
    if not chunks:
        return
    row = conn.execute(
        "select json_array_length(embedding) from document_chunks"
        " where not (job_id = ? and tenant_id = ?) and json_array_length(embedding) > 0"
        " limit 1",
        (job_id, tenant_id),
    ).fetchone()
    size = len(chunks[0]["embedding"])
    if row is not None and row[0] != size:
        raise dimension_error(chunks, f"the file holds {row[0]}-dimension vectors")


def _keyed_by_tenant(conn: sqlite3.Connection) -> bool:
    columns = conn.execute("pragma table_info(document_chunks)").fetchall()
    return any(row[1] == "tenant_id" and row[5] > 0 for row in columns)
