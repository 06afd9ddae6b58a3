"""Hostile PDFs: tiny files that ask for much CPU or trip pypdf's limits are bad input (65),
never a retried crash (70) nor an unbounded child."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from tests.worker.conftest import make_job, pdf_file, run_worker

pytest.importorskip("pypdf")

FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def one_stream_many_pages(pages: int, operators: int) -> bytes:
    """Every page draws the same compressed content stream of `operators` text operators:
    a few kilobytes of file, pages x operators of parsing."""
    content = b"BT /F1 12 Tf 72 720 Td " + b"(w) Tj " * operators + b"ET"
    packed = zlib.compress(content, 9)
    first_page = 3
    stream_obj = first_page + pages
    font_obj = stream_obj + 1
    kids = b" ".join(b"%d 0 R" % (first_page + i) for i in range(pages))
    page = (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
        b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (stream_obj, font_obj)
    )
    return pdf_file(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
            *([page] * pages),
            b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed)
            + packed
            + b"\nendstream",
            FONT,
        ]
    )


def deep_page_tree(depth: int = 120) -> bytes:
    """Pages nested deeper than pypdf allows: LimitReachedError while reading the tree."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for i in range(depth):
        parent = b" /Parent %d 0 R" % (i + 1) if i else b""
        objects.append(b"<< /Type /Pages /Kids [%d 0 R] /Count 1%s >>" % (i + 3, parent))
    objects.append(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] >>" % (depth + 1))
    return pdf_file(objects)


def _run(tmp_path: Path, name: str, data: bytes, **env: str) -> tuple[int, str]:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    (root / name).write_bytes(data)
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    out = run_worker(
        make_job({"type": "file", "path": name}), cwd, INGEST_FILE_ROOT=str(root), **env
    )
    return out.code, out.stderr


def test_a_cpu_costly_pdf_stops_at_its_cpu_budget(tmp_path: Path) -> None:
    data = one_stream_many_pages(pages=400, operators=100_000)
    assert len(data) < 64 * 1024
    code, err = _run(tmp_path, "costly.pdf", data, INGEST_PDF_CPU_SECONDS="1")
    assert code == 65, err
    assert "INGEST_PDF_CPU_SECONDS" in err


def test_too_many_pages_is_bad_input(tmp_path: Path) -> None:
    data = one_stream_many_pages(pages=30, operators=1)
    code, err = _run(tmp_path, "pages.pdf", data, INGEST_PDF_MAX_PAGES="20")
    assert code == 65, err
    assert "INGEST_PDF_MAX_PAGES" in err
    code, err = _run(tmp_path, "pages.pdf", data, INGEST_PDF_MAX_PAGES="30")
    assert code == 0, err


def test_pypdf_limit_reached_is_bad_input_not_a_crash(tmp_path: Path) -> None:
    code, err = _run(tmp_path, "limit.pdf", deep_page_tree())
    assert code == 65, err
    assert "limit.pdf: unreadable PDF (LimitReachedError)" in err
