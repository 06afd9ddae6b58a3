"""Errors the database chunk stores share."""

from __future__ import annotations

from typing import Any

from ingest_worker.errors import ConfigError


def dimension_error(chunks: list[dict[str, Any]], reason: str) -> ConfigError:
    """The store's embedding column does not take this job's vectors: every job of this
    embedder would fail the same way, so it is configuration (78)."""
    size = len(chunks[0]["embedding"]) if chunks else 0
    return ConfigError(
        f"chunk store: document_chunks.embedding does not take this embedder's {size}-dimension "
        f"vectors ({reason}); make INGEST_EMBEDDER / INGEST_EMBEDDING_MODEL / "
        "INGEST_EMBEDDING_DIM match the column, or change the column with "
        "set_document_chunks_dimension() (docs/embeddings.md)"
    )


def is_pgvector_size_error(message: str) -> bool:
    """pgvector's refusal of a vector for a fixed-size column: "expected N dimensions, not M"."""
    return "expected" in message and "dimensions" in message
