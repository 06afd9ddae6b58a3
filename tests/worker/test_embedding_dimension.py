"""The chunk stores follow the model's dimension: the dimension migration fixes the column,
and a vector of another size is refused as configuration (78) in every store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO_ROOT
from tests.status.postgrest_standin import StandIn, service_key
from tests.status.supabase_stubs import install_stubs
from tests.worker.conftest import apply_migration, make_job, run_worker
from tests.worker.embeddings_api import KEY, EmbeddingsAPI, embeddings_api

DIMENSION_MIGRATION = (
    REPO_ROOT / "supabase" / "migrations" / "20261201000400_document_chunks_dimension.sql"
)
TEXT = "tides and currents " * 40


def migrate(dsn: str) -> None:
    apply_migration(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DIMENSION_MIGRATION.read_text())  # type: ignore[arg-type]
        conn.execute(DIMENSION_MIGRATION.read_text())  # type: ignore[arg-type]  # re-appliable


def set_dimension(dsn: str, dims: int | None) -> int | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("select public.set_document_chunks_dimension(%s)", (dims,)).fetchone()
    assert row is not None
    return row[0] if row[0] is None else int(row[0])


@pytest.fixture
def api() -> Iterator[EmbeddingsAPI]:
    with embeddings_api() as server:
        yield server


def openai_env(api: EmbeddingsAPI) -> dict[str, str]:
    return {
        "INGEST_EMBEDDER": "openai",
        "INGEST_EMBEDDING_MODEL": "test-embed-small",
        "INGEST_EMBEDDING_BASE_URL": api.base_url,
        "INGEST_EMBEDDING_API_KEY": KEY,
    }


def test_postgres_column_fixed_to_the_models_dimension(
    pg_dsn: str, workdir: Path, api: EmbeddingsAPI
) -> None:
    migrate(pg_dsn)
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("select public.document_chunks_dimension()").fetchone()
    assert row == (None,), "not fixed by default: any embedder fits"
    assert set_dimension(pg_dsn, 16) == 16
    job = make_job({"type": "text", "text": TEXT}, job_id="dim-1")
    ok = run_worker(job, workdir, INGEST_CHUNK_DSN=pg_dsn, **openai_env(api))
    assert ok.code == 0, ok.stderr
    assert ok.result["embedding"]["dimensions"] == 16 and ok.result["store"] == "postgres"

    other = run_worker(make_job({"type": "text", "text": TEXT}, job_id="dim-2"), workdir,
                       INGEST_CHUNK_DSN=pg_dsn)  # fmt: skip
    assert other.code == 78, other.stderr
    assert "384-dimension" in other.stderr and "INGEST_EMBEDDING_MODEL" in other.stderr
    assert "set_document_chunks_dimension" in other.stderr and "Traceback" not in other.stderr
    with psycopg.connect(pg_dsn) as conn:
        jobs = conn.execute("select distinct job_id from document_chunks").fetchall()
    assert jobs == [("dim-1",)], "the refused job wrote nothing"

    # Refixing to another size fails while rows of this size remain, and changes nothing.
    with pytest.raises(psycopg.errors.CheckViolation):
        set_dimension(pg_dsn, 384)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("select public.document_chunks_dimension()").fetchone() == (16,)
    assert set_dimension(pg_dsn, None) is None
    again = run_worker(make_job({"type": "text", "text": TEXT}, job_id="dim-2"), workdir,
                       INGEST_CHUNK_DSN=pg_dsn)  # fmt: skip
    assert again.code == 0, again.stderr


def test_supabase_store_reports_a_dimension_mismatch(
    pg_dsn: str, workdir: Path, api: EmbeddingsAPI
) -> None:
    install_stubs(pg_dsn)
    migrate(pg_dsn)
    set_dimension(pg_dsn, 16)
    server = StandIn(pg_dsn)
    try:
        env = {"INGEST_CHUNK_SUPABASE_URL": server.url, "INGEST_CHUNK_SUPABASE_KEY": service_key()}
        ok = run_worker(make_job({"type": "text", "text": TEXT}), workdir, **env, **openai_env(api))
        assert ok.code == 0, ok.stderr
        bad = run_worker(make_job({"type": "text", "text": TEXT}), workdir, **env)
    finally:
        server.stop()
    assert bad.code == 78, bad.stderr
    assert "384-dimension" in bad.stderr and "document_chunks.embedding" in bad.stderr


def test_sqlite_file_keeps_one_dimension(tmp_path: Path, workdir: Path, api: EmbeddingsAPI) -> None:
    db = str(tmp_path / "chunks.sqlite3")
    first = run_worker(make_job({"type": "text", "text": TEXT}, job_id="a"), workdir,
                       INGEST_CHUNK_SQLITE_PATH=db)  # fmt: skip
    assert first.code == 0
    other = run_worker(make_job({"type": "text", "text": TEXT}, job_id="b"), workdir,
                       INGEST_CHUNK_SQLITE_PATH=db, **openai_env(api))  # fmt: skip
    assert other.code == 78 and "16-dimension" in other.stderr
    assert "holds 384-dimension vectors" in other.stderr
    # The same job re-embedded with another model replaces its own rows: no conflict with itself.
    same = run_worker(make_job({"type": "text", "text": TEXT}, job_id="a"), workdir,
                      INGEST_CHUNK_SQLITE_PATH=db, **openai_env(api))  # fmt: skip
    assert same.code == 0, same.stderr
