"""Chunks land in PostgreSQL (through the migration's RPC) and SQLite; a retried job
replaces its own chunks and nobody else's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from tests.worker.conftest import MIGRATION, apply_migration, make_job, run_worker

LONG = " ".join(f"sentence {i} about tides and currents." for i in range(300))


def _pg_rows(dsn: str) -> list[tuple[str, str, int, str, int, dict[str, object]]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "select job_id, tenant_id, chunk_index, source, cardinality(embedding::real[]),"
            " metadata from document_chunks order by job_id, chunk_index"
        ).fetchall()


def test_postgres_store_is_idempotent_per_job(pg_dsn: str, workdir: Path) -> None:
    apply_migration(pg_dsn)
    apply_migration(pg_dsn)  # the migration itself can be re-applied
    env = {"INGEST_CHUNK_DSN": pg_dsn, "INGEST_CHUNK_SIZE": "400", "INGEST_CHUNK_OVERLAP": "50"}
    job = make_job(
        {"type": "text", "text": LONG, "title": "tides"},
        job_id="pg-1",
        metadata={"lang": "en", "trial_token": "do-not-store-me"},
    )
    first = run_worker(job, workdir, **env)
    assert first.code == 0, first.stderr
    assert first.result["store"] == "postgres"
    n = first.result["chunks"]
    assert n > 5
    other = run_worker(
        make_job({"type": "text", "text": "another job"}, job_id="pg-2"), workdir, **env
    )
    assert other.code == 0, other.stderr

    again = run_worker(job, workdir, **env, INGEST_ATTEMPT="2")
    assert again.code == 0, again.stderr
    rows = _pg_rows(pg_dsn)
    mine = [r for r in rows if r[0] == "pg-1"]
    assert [r[2] for r in mine] == list(range(n)), "a retry replaces, never duplicates"
    assert all(r[1] == "tenant-a" and r[3] == "tides" and r[4] == 384 for r in mine)
    assert mine[0][5] == {"lang": "en", "source_type": "text"}
    assert [r[0] for r in rows].count("pg-2") == 1

    shorter = run_worker(
        make_job({"type": "text", "text": "now short"}, job_id="pg-1"), workdir, **env
    )
    assert shorter.code == 0
    assert [r[0] for r in _pg_rows(pg_dsn)] == ["pg-1", "pg-2"]


def test_postgres_unavailable_is_temporary_and_missing_migration_is_config(
    pg_dsn: str, workdir: Path
) -> None:
    job = make_job({"type": "text", "text": "hello"})
    down = run_worker(job, workdir, INGEST_CHUNK_DSN="postgresql://root@127.0.0.1:1/none")
    assert down.code == 75 and "unavailable" in down.stderr
    assert "Traceback" not in down.stderr
    bare = run_worker(job, workdir, INGEST_CHUNK_DSN=pg_dsn)
    assert bare.code == 78 and MIGRATION.name in bare.stderr


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres:x7%QkCHUNKSECRET@127.0.0.1:5432/test",  # a bad %-escape
        "host=127.0.0.1 user=postgres password=My CHUNKSECRET dbname=test",  # unquoted space
        "postgresql://postgres:pa@ss/CHUNKSECRET@127.0.0.1:5432/test",  # unencoded @ and /
        "postgresql://postgres:CHUNKSECRET@127.0.0.1:1/test",  # nothing listens
    ],
)
def test_a_chunk_store_dsn_never_reaches_the_job_error(dsn: str, workdir: Path) -> None:
    """The worker's message becomes the job's error, which the job's tenant reads: libpq's
    own text, which quotes the pieces of a DSN it cannot parse, never reaches it."""
    out = run_worker(make_job({"type": "text", "text": "hello"}), workdir, INGEST_CHUNK_DSN=dsn)
    assert out.code in (75, 78), out.stderr
    assert "CHUNKSECRET" not in out.stderr + out.stdout
    assert "INGEST_CHUNK_DSN" in out.stderr and "Traceback" not in out.stderr


def test_migration_uses_pgvector_when_available(pg_dsn: str) -> None:
    apply_migration(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        available = conn.execute(
            "select count(*) from pg_available_extensions where name = 'vector'"
        ).fetchone()
        column = conn.execute(
            "select format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = 'public.document_chunks'::regclass and attname = 'embedding'"
        ).fetchone()
    assert available and column
    assert column[0] == ("vector" if available[0] else "real[]")


def test_sqlite_store_is_idempotent_per_job(tmp_path: Path, workdir: Path) -> None:
    db = tmp_path / "nested" / "chunks.sqlite3"
    env = {"INGEST_CHUNK_SQLITE_PATH": str(db), "INGEST_CHUNK_SIZE": "300"}
    job = make_job({"type": "text", "text": LONG}, job_id="sq-1")
    assert run_worker(job, workdir, **env).code == 0
    assert (
        run_worker(make_job({"type": "text", "text": "b"}, job_id="sq-2"), workdir, **env).code == 0
    )
    again = run_worker(job, workdir, **env)
    assert again.code == 0, again.stderr
    with sqlite3.connect(db) as conn:
        counts = dict(
            conn.execute("select job_id, count(*) from document_chunks group by job_id").fetchall()
        )
        indexes = [r[0] for r in conn.execute(
            "select chunk_index from document_chunks where job_id = 'sq-1' order by 1"
        )]  # fmt: skip
    assert counts == {"sq-1": again.result["chunks"], "sq-2": 1}
    assert indexes == list(range(again.result["chunks"]))


def test_hash_embeddings_are_deterministic_across_processes(tmp_path: Path, workdir: Path) -> None:
    dbs = [tmp_path / "one.sqlite3", tmp_path / "two.sqlite3"]
    for db in dbs:
        job = make_job({"type": "text", "text": "same words, same vector"})
        assert run_worker(job, workdir, INGEST_CHUNK_SQLITE_PATH=str(db)).code == 0
    vectors = []
    for db in dbs:
        with sqlite3.connect(db) as conn:
            vectors.append(conn.execute("select embedding from document_chunks").fetchone())
    assert vectors[0] == vectors[1]
