"""Sending spans to Langfuse: its OTLP/HTTP endpoint, authenticated as the SDK's own
exporter is, through a wrapper that counts what was sent and reports failed batches."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

# One logger for everything about traces, whichever module writes it.
log = logging.getLogger("supervisor.tracing")

OTLP_TRACES_PATH = "/api/public/otel/v1/traces"  # Langfuse's OTLP/HTTP endpoint


class CountingExporter(SpanExporter):
    """Wraps the OTLP exporter to count what was sent and report failed batches."""

    def __init__(self, inner: SpanExporter, on_failure: Callable[[int], None] | None) -> None:
        self.inner = inner
        self.on_failure = on_failure
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            log.warning("trace export raised; %d spans dropped", len(spans), exc_info=True)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
            if self.on_failure is not None:
                try:
                    self.on_failure(1)
                except Exception:
                    log.debug("trace export failure hook failed", exc_info=True)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def langfuse_exporter(
    base_url: str,
    public_key: str,
    secret_key: str,
    timeout_s: float,
    on_failure: Callable[[int], None] | None,
) -> CountingExporter:
    """An exporter to the Langfuse project at `base_url`; one request waits `timeout_s`."""
    return CountingExporter(
        OTLPSpanExporter(
            endpoint=base_url + OTLP_TRACES_PATH,
            headers=_auth_headers(public_key, secret_key),
            timeout=timeout_s,
            compression=Compression.Gzip,
        ),
        on_failure,
    )


def _auth_headers(public_key: str, secret_key: str) -> dict[str, str]:
    """What the SDK's own exporter sends (langfuse/_client/span_processor.py)."""
    from langfuse._version import __version__ as langfuse_version

    token = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
    return {
        "Authorization": f"Basic {token}",
        "x-langfuse-sdk-name": "python",
        "x-langfuse-sdk-version": langfuse_version,
        "x-langfuse-public-key": public_key,
        "x-langfuse-ingestion-version": "4",
    }
