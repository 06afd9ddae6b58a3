"""Hostile job input to the real `python -m ingest_worker`: every one is a clear exit 65
(never 70, which is retried), or a skipped item with a reason; no secret is stored."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import psycopg

from tests.worker.conftest import Site, apply_migration, make_job, run_worker


def test_malformed_urls_are_bad_input(workdir: Path) -> None:
    for url in ("http://[::1/", "http://" + "a" * 70 + ".example/", "http://ex\udcffample.com/"):
        out = run_worker(make_job({"type": "url", "url": url}), workdir)
        assert out.code == 65, (url, out.code, out.stderr)
        assert "Traceback" not in out.stderr


def test_lone_surrogate_in_the_job_is_bad_input(workdir: Path) -> None:
    raw = json.dumps(make_job({"type": "text", "text": "x"}, metadata={"t": "\ud800"})).encode()
    out = run_worker(raw, workdir)
    assert out.code == 65, (out.code, out.stderr)
    assert "metadata" in out.stderr


def test_deep_metadata_is_bad_input_not_a_crash(workdir: Path) -> None:
    meta: dict[str, object] = {"leaf": 1}
    for _ in range(600):
        meta = {"n": meta}
    out = run_worker(make_job({"type": "text", "text": "x"}, metadata=meta), workdir)
    assert out.code == 65, (out.code, out.stderr[-500:])
    assert "nested" in out.stderr
    head = json.dumps(make_job({"type": "text", "text": "x"}))[:-1]
    deeper = head + ', "metadata": ' + '{"n": ' * 5000 + "1" + "}" * 5001
    out = run_worker(deeper.encode(), workdir)
    assert out.code == 65, (out.code, out.stderr[-500:])


def test_one_bad_link_is_skipped_not_the_crawl(site: Site, workdir: Path) -> None:
    site.html(
        "/",
        "<p>home page about harbours</p><a href='http://[::1/'>bad</a>"
        "<a href='http://" + "b" * 70 + ".example/'>long</a><a href='/ok'>ok</a>",
    )
    site.html("/ok", "<p>second page about piers</p>")
    out = run_worker(
        make_job({"type": "crawl", "urls": [site.base + "/"], "crawl_depth": 1}),
        workdir,
        INGEST_CRAWL_ALLOW_HOSTS=site.hostport,
    )
    assert out.code == 0, out.stderr
    assert out.result["pages"] == 2
    reasons = [s["reason"] for s in out.result["skipped_items"]]
    assert any("invalid" in r for r in reasons), reasons


def test_a_page_naming_a_charset_that_cannot_decode_is_read_as_utf8(
    site: Site, workdir: Path
) -> None:
    """Python codecs that no page means: `undefined` and `idna` fail to decode here,
    `punycode` takes time quadratic in the body, `base64` is no text codec. The page is
    read as UTF-8, in a crawl too, never a crash."""
    charsets = ("undefined", "idna", "punycode", "base64", "nosuchcodec")
    for cs in charsets:
        body = f"<p>page in {cs} about harbours</p>".encode()
        site.routes[f"/{cs}"] = (200, {"Content-Type": f"text/html; charset={cs}"}, body)
    for cs in charsets:
        out = run_worker(
            make_job({"type": "url", "url": f"{site.base}/{cs}"}),
            workdir,
            INGEST_CRAWL_ALLOW_HOSTS=site.hostport,
        )
        assert out.code == 0, (cs, out.code, out.stderr[-500:])
    site.html("/", "".join(f"<a href='/{cs}'>{cs}</a>" for cs in charsets) + "<p>home</p>")
    out = run_worker(
        make_job({"type": "crawl", "urls": [site.base + "/"], "crawl_depth": 1}),
        workdir,
        INGEST_CRAWL_ALLOW_HOSTS=site.hostport,
    )
    assert out.code == 0, out.stderr[-500:]
    assert out.result["pages"] == 1 + len(charsets), out.result


def test_a_fifo_under_the_file_root_is_refused_without_hanging(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "pipe.txt")
    # A worker that blocks in open() is killed by run_worker's timeout and fails here.
    out = run_worker(
        make_job({"type": "file", "path": "pipe.txt"}), tmp_path, INGEST_FILE_ROOT=str(root)
    )
    assert out.code == 65, (out.code, out.stderr)
    assert "not a regular file" in out.stderr


SECRET_META = {
    "lang": "en",
    "access_token": "at-value-1",
    "Client-Secret": "cs-value-2",
    "api-key": "ak-value-3",
    "house_pin": "hp-value-4",
    "nested": {"refresh_token": "rt-value-5", "ok": "kept"},
}


def test_secret_named_metadata_never_reaches_the_chunk_store(tmp_path: Path, workdir: Path) -> None:
    db = tmp_path / "chunks.sqlite3"
    job = make_job({"type": "text", "text": "some text about lakes"}, metadata=SECRET_META)
    out = run_worker(
        job,
        workdir,
        INGEST_CHUNK_STORE="sqlite",
        INGEST_CHUNK_SQLITE_PATH=str(db),
        INGEST_SECRET_KEYS="house_pin",
    )
    assert out.code == 0, out.stderr
    with sqlite3.connect(db) as conn:
        (meta,) = conn.execute("select metadata from document_chunks").fetchone()
    assert json.loads(meta) == {"lang": "en", "nested": {"ok": "kept"}, "source_type": "text"}
    assert "value-" not in out.stdout + out.stderr


def _two_tenants_same_job(workdir: Path, **env: str) -> None:
    for tenant, text in (("tenant-a", "alpha text"), ("tenant-b", "beta text")):
        job = make_job({"type": "text", "text": text}, job_id="shared-id")
        job["tenant_id"] = tenant
        out = run_worker(job, workdir, **env)
        assert out.code == 0, out.stderr


def test_sqlite_chunks_of_one_job_id_are_kept_per_tenant(tmp_path: Path, workdir: Path) -> None:
    db = tmp_path / "chunks.sqlite3"
    _two_tenants_same_job(workdir, INGEST_CHUNK_STORE="sqlite", INGEST_CHUNK_SQLITE_PATH=str(db))
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select tenant_id, content from document_chunks order by tenant_id"
        ).fetchall()
    assert rows == [("tenant-a", "alpha text"), ("tenant-b", "beta text")]


def test_postgres_chunks_of_one_job_id_are_kept_per_tenant(pg_dsn: str, workdir: Path) -> None:
    apply_migration(pg_dsn)
    _two_tenants_same_job(workdir, INGEST_CHUNK_DSN=pg_dsn)
    _two_tenants_same_job(workdir, INGEST_CHUNK_DSN=pg_dsn)  # a retry replaces its own only
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "select tenant_id, content from document_chunks order by tenant_id"
        ).fetchall()
    assert rows == [("tenant-a", "alpha text"), ("tenant-b", "beta text")]


def test_sqlite_file_from_before_tenant_keys_is_rebuilt_keeping_its_rows(
    tmp_path: Path, workdir: Path
) -> None:
    db = tmp_path / "chunks.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "create table document_chunks (job_id text not null, tenant_id text not null,"
            " chunk_index integer not null, source text not null, content text not null,"
            " embedding text not null, metadata text not null, created_at text not null"
            " default 'then', primary key (job_id, chunk_index))"
        )
        conn.execute(
            "insert into document_chunks values"
            " ('shared-id', 'tenant-a', 0, 's', 'old alpha', '[]', '{}', 'then')"
        )
    out = run_worker(
        make_job({"type": "text", "text": "beta text"}, job_id="shared-id", tenant_id="tenant-b"),
        workdir,
        INGEST_CHUNK_STORE="sqlite",
        INGEST_CHUNK_SQLITE_PATH=str(db),
    )
    assert out.code == 0, out.stderr
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select tenant_id, content from document_chunks order by tenant_id"
        ).fetchall()
    assert rows == [("tenant-a", "old alpha"), ("tenant-b", "beta text")]


def test_a_secret_in_a_page_url_is_not_stored(site: Site, workdir: Path, tmp_path: Path) -> None:
    site.html("/doc?access_token=tok-in-url-77", "<title>Docs</title><p>page about canals</p>")
    db = tmp_path / "chunks.sqlite3"
    job = make_job(
        {"type": "url", "url": site.base + "/doc?access_token=tok-in-url-77"},
        metadata={
            "source_token": "tok-in-url-77",
            "origin": "https://alice:hunter2hunter2@example.com/repo",
        },
    )
    out = run_worker(
        job,
        workdir,
        INGEST_CRAWL_ALLOW_HOSTS=site.hostport,
        INGEST_CHUNK_STORE="sqlite",
        INGEST_CHUNK_SQLITE_PATH=str(db),
    )
    assert out.code == 0, out.stderr
    with sqlite3.connect(db) as conn:
        (source, meta) = conn.execute("select source, metadata from document_chunks").fetchone()
    assert "tok-in-url-77" not in source + meta, (source, meta)
    assert "hunter2hunter2" not in meta and "example.com/repo" in meta, meta
    assert "tok-in-url-77" not in out.stdout + out.stderr


def test_nul_and_lone_surrogates_are_stored_not_a_crash(
    pg_dsn: str, site: Site, workdir: Path, tmp_path: Path
) -> None:
    """PostgreSQL refuses NUL in text and jsonb, and no UTF-8 holds a lone surrogate (a
    JSON escape in a file, a page in UTF-7): each job is stored, never exit 70 or 75."""
    apply_migration(pg_dsn)
    root = tmp_path / "files"
    root.mkdir()
    (root / "s.json").write_text('{"note": "half a pair \\ud800 here"}')
    site.routes["/utf7"] = (
        200,
        {"Content-Type": "text/html; charset=utf-7"},
        b"<title>t +2AA-</title><p>text +2AA- about locks</p>",
    )
    jobs = [
        make_job({"type": "text", "text": "about weirs"}, "nul", metadata={"n": "a\u0000b"}),
        make_job({"type": "file", "path": "s.json"}, "json-surrogate"),
        make_job({"type": "url", "url": site.base + "/utf7"}, "utf7-surrogate"),
    ]
    for job in jobs:
        out = run_worker(
            job,
            workdir,
            INGEST_CHUNK_DSN=pg_dsn,
            INGEST_FILE_ROOT=str(root),
            INGEST_CRAWL_ALLOW_HOSTS=site.hostport,
        )
        assert out.code == 0, (job["data_source"], out.code, out.stderr[-500:])
        with psycopg.connect(pg_dsn) as conn:
            (content, meta) = conn.execute(
                "select content, metadata::text from document_chunks where job_id = %s",
                (job["job_id"],),
            ).fetchone()
        assert "\x00" not in content + meta
