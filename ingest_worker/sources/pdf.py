"""Text of PDF files through pypdf (pure Python), imported only for PDFs."""

from __future__ import annotations

import io

from ingest_worker.errors import BadInput, ConfigError


def extract_pdf(name: str, data: bytes) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:
        raise ConfigError("PDF files need the pypdf package, which is not installed") from None
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise BadInput(f"{name}: encrypted PDF")
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{name}: unreadable PDF ({exc.__class__.__name__})") from None
