"""`file` sources: formats under INGEST_FILE_ROOT, and every way out of it refused."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from tests.worker.conftest import make_job, minimal_pdf, run_worker


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "docs").mkdir(parents=True)
    (r / "docs" / "a.txt").write_text("alpha text file about rivers")
    (r / "docs" / "b.md").write_text("# Beta\n\nmarkdown about mountains")
    (r / "c.html").write_text(
        "<html><head><title>Gamma page</title><style>.x{color:red}</style>"
        "<script>var hidden = 'scriptword';</script></head>"
        "<body><p>visible forests</p><noscript>noscriptword</noscript>"
        "<div>and deserts</div></body></html>"
    )
    (r / "d.json").write_text(json.dumps({"title": "Delta", "items": [{"body": "json oceans"}]}))
    (r / "e.pdf").write_bytes(minimal_pdf("Epsilon pdf glaciers"))
    (tmp_path / "outside.txt").write_text("outside secret")
    os.symlink(tmp_path / "outside.txt", r / "escape.txt")
    os.symlink(r / "docs" / "a.txt", r / "inside-link.txt")
    return r


def test_every_supported_format_is_read_and_stored(root: Path, tmp_path: Path) -> None:
    pytest.importorskip("pypdf")
    db = tmp_path / "chunks.sqlite3"
    paths = ["docs/a.txt", "docs/b.md", "c.html", "d.json", "e.pdf", "inside-link.txt"]
    out = run_worker(
        make_job({"type": "file", "paths": paths}),
        tmp_path,
        INGEST_FILE_ROOT=str(root),
        INGEST_CHUNK_SQLITE_PATH=str(db),
    )
    assert out.code == 0, out.stderr
    assert out.result["pages"] == 6 and out.result["store"] == "sqlite"
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("select source, content from document_chunks").fetchall())
    assert "rivers" in rows["docs/a.txt"] and "mountains" in rows["docs/b.md"]
    html = rows["c.html"]
    assert "Gamma page" in html and "visible forests" in html and "and deserts" in html
    assert "scriptword" not in html and "color" not in html and "noscriptword" not in html
    assert "json oceans" in rows["d.json"] and "Delta" in rows["d.json"]
    assert "Epsilon pdf glaciers" in rows["e.pdf"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../outside.txt", "no '..'"),
        ("docs/../../outside.txt", "no '..'"),
        ("/etc/hostname", "relative"),
        ("escape.txt", "outside the file root"),
        ("docs/missing.txt", "no such file"),
        ("docs", "unsupported file type"),
        ("docs/a.exe", "unsupported file type"),
    ],
)
def test_paths_leaving_the_root_or_unreadable_exit_65(
    root: Path, tmp_path: Path, path: str, message: str
) -> None:
    (root / "docs" / "a.exe").write_bytes(b"MZ")
    out = run_worker(make_job({"type": "file", "path": path}), tmp_path, INGEST_FILE_ROOT=str(root))
    assert out.code == 65, (out.code, out.stderr)
    assert message in out.stderr
    assert "outside secret" not in out.stdout + out.stderr


def test_a_file_over_the_size_cap_is_refused(root: Path, tmp_path: Path) -> None:
    (root / "big.txt").write_text("x" * 5000)
    out = run_worker(
        make_job({"type": "file", "path": "big.txt"}),
        tmp_path,
        INGEST_FILE_ROOT=str(root),
        INGEST_MAX_FILE_BYTES="1000",
    )
    assert out.code == 65 and "INGEST_MAX_FILE_BYTES" in out.stderr


def test_a_broken_pdf_and_bad_json_are_bad_input(root: Path, tmp_path: Path) -> None:
    pytest.importorskip("pypdf")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\nnot really a pdf")
    (root / "broken.json").write_text("{nope")
    (root / "deep.json").write_text("[" * 5000 + "]" * 5000)
    for name in ("broken.pdf", "broken.json", "deep.json"):
        out = run_worker(
            make_job({"type": "file", "path": name}), tmp_path, INGEST_FILE_ROOT=str(root)
        )
        assert out.code == 65, (name, out.stderr)
        assert name in out.stderr


@pytest.mark.parametrize(
    "tenant", ["tenant-a", "tenant-b", "..", ".", ".snapshot", "link-to-a", "tenant-a\x00"]
)
def test_with_per_tenant_roots_a_tenant_reads_only_its_own_directory(
    tmp_path: Path, tenant: str
) -> None:
    """Tenants share one INGEST_FILE_ROOT: with INGEST_FILE_ROOT_PER_TENANT each reads only
    under <root>/<its tenant id>, never another tenant's uploads (nor, with a tenant id
    such as '..', anything around the root)."""
    root = tmp_path / "uploads"
    for owner in ("tenant-a", "tenant-b"):
        (root / owner).mkdir(parents=True)
        (root / owner / "doc.txt").write_text(f"private words of {owner}")
    (root / "tenant-a" / "only-a.txt").write_text("a alone")
    (root / ".snapshot" / "tenant-a").mkdir(parents=True)  # a filesystem's own directory
    (root / ".snapshot" / "doc.txt").write_text("snapshot of everyone")
    (root / "link-to-a").symlink_to(root / "tenant-a")
    env = {"INGEST_FILE_ROOT": str(root), "INGEST_FILE_ROOT_PER_TENANT": "1"}
    job = make_job({"type": "file", "path": "doc.txt"}, tenant_id=tenant)
    out = run_worker(job, tmp_path, INGEST_CHUNK_STORE="none", **env)
    if tenant in (".", "..", ".snapshot", "link-to-a", "tenant-a\x00"):
        assert out.code == 65 and "tenant" in out.stderr, out.stderr
        return
    assert out.code == 0, out.stderr
    other = "tenant-b" if tenant == "tenant-a" else "tenant-a"
    for path in (f"../{other}/doc.txt", f"{other}/doc.txt"):
        steal = make_job({"type": "file", "path": path}, tenant_id=tenant)
        assert run_worker(steal, tmp_path, INGEST_CHUNK_STORE="none", **env).code == 65
    if tenant == "tenant-b":
        missing = make_job({"type": "file", "path": "only-a.txt"}, tenant_id=tenant)
        out = run_worker(missing, tmp_path, INGEST_CHUNK_STORE="none", **env)
        assert out.code == 65 and "no such file" in out.stderr, out.stderr


def test_a_directory_swapped_for_a_symlink_after_the_check_is_refused(tmp_path: Path) -> None:
    """The path is resolved, then opened: a directory on it that a tenant swaps for a
    symlink to another tenant's in between must not lead there (only the last part of a
    path is opened with O_NOFOLLOW)."""
    from ingest_worker.errors import BadInput
    from ingest_worker.sources.files import _read, resolve_under

    uploads = tmp_path / "uploads"
    (uploads / "tenant-a" / "d").mkdir(parents=True)
    (uploads / "tenant-b").mkdir()
    (uploads / "tenant-a" / "d" / "b.txt").write_text("tenant a's own")
    (uploads / "tenant-b" / "b.txt").write_text("PRIVATE DATA OF TENANT B")
    root = os.path.realpath(uploads / "tenant-a")
    full = resolve_under(root, "d/b.txt")
    (uploads / "tenant-a" / "d").rename(uploads / "tenant-a" / "d-old")
    (uploads / "tenant-a" / "d").symlink_to("../tenant-b")
    with pytest.raises(BadInput, match="outside the file root"):
        _read(root, full, "d/b.txt", 1 << 20)
    (uploads / "tenant-a" / "d").unlink()
    (uploads / "tenant-a" / "d-old").rename(uploads / "tenant-a" / "d")
    assert _read(root, full, "d/b.txt", 1 << 20) == b"tenant a's own"
