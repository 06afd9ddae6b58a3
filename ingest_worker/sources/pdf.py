"""Text of PDF files through pypdf (pure Python), imported only for PDFs.

A PDF is a program of sorts: a few kilobytes can ask for minutes of CPU (one content stream
drawn by thousands of pages) or hundreds of megabytes (streams that inflate). Reading one is
bounded by a page count, a CPU-time budget and the extracted text's size; pypdf's own limits
(LimitReachedError) and a malformed file are the job's fault too: all end as bad input.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from ingest_worker.cpu_budget import OverBudget, cpu_budget
from ingest_worker.errors import BadInput, ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ingest_worker.config import WorkerConfig


@dataclass(frozen=True)
class PdfLimits:
    max_pages: int = 2000
    cpu_seconds: float = 30.0
    max_text_chars: int = 50 * 1024 * 1024

    @classmethod
    def of(cls, config: WorkerConfig | None) -> PdfLimits:
        """The operator's limits (INGEST_PDF_*), for a file and a fetched PDF alike."""
        if config is None:
            return cls()
        return cls(config.pdf_max_pages, config.pdf_cpu_seconds, config.max_total_bytes)


def extract_pdf(name: str, data: bytes, limits: PdfLimits | None = None) -> str:
    limits = limits or PdfLimits()
    try:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError
    except ImportError:
        raise ConfigError("PDF files need the pypdf package, which is not installed") from None
    try:
        with cpu_budget(limits.cpu_seconds):
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                raise BadInput(f"{name}: encrypted PDF")
            if len(reader.pages) > limits.max_pages:
                raise BadInput(f"{name}: more than INGEST_PDF_MAX_PAGES ({limits.max_pages}) pages")
            parts: list[str] = []
            size = 0
            for page in reader.pages:
                text = page.extract_text() or ""
                size += len(text)
                if size > limits.max_text_chars:
                    raise BadInput(f"{name}: more than {limits.max_text_chars} characters of text")
                parts.append(text)
            return "\n\n".join(parts)
    except OverBudget:
        raise BadInput(
            f"{name}: reading it took more than INGEST_PDF_CPU_SECONDS "
            f"({limits.cpu_seconds:g}) of CPU time"
        ) from None
    except MemoryError:
        raise BadInput(f"{name}: reading it needs more memory than the job may use") from None
    except PyPdfError as exc:  # LimitReachedError, PdfReadError, PdfStreamError, ...
        raise BadInput(f"{name}: unreadable PDF ({exc.__class__.__name__})") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        # pypdf reports many malformed structures with plain exceptions.
        raise BadInput(f"{name}: unreadable PDF ({exc.__class__.__name__})") from None
