"""sentence-transformers, loaded from local weights unless downloads are allowed.

A job never downloads a model by surprise: absent weights are the operator's to fetch once
(or to allow with INGEST_EMBEDDING_ALLOW_DOWNLOAD=1), so they fail as configuration (78).
"""

from __future__ import annotations

from typing import Any

from ingest_worker.embedders.batches import LOCAL_BATCH, fixed_batches
from ingest_worker.errors import ConfigError, TempFail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ingest_worker.config import EmbeddingSettings


def load_model(model_name: str, settings: EmbeddingSettings) -> Any:
    """The SentenceTransformer for `model_name` (a hub name or a local directory)."""
    try:
        from sentence_transformers import (  # type: ignore[import-not-found,unused-ignore]
            SentenceTransformer,
        )
    except ImportError:
        raise ConfigError(
            "INGEST_EMBEDDER=sentence-transformers: the sentence-transformers package "
            "is not installed in the worker's Python: run "
            "pip install 'ingest-supervisor[embeddings]'"
        ) from None
    try:
        return SentenceTransformer(
            model_name,
            cache_folder=settings.cache_dir,
            local_files_only=not settings.allow_download,
        )
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
        if settings.allow_download:
            # The hub or the network may come back: retry later.
            raise TempFail(
                f"embedding model {model_name!r} could not be loaded: {reason}"
            ) from None
        where = settings.cache_dir or "the Hugging Face cache (HF_HOME)"
        raise ConfigError(
            f"INGEST_EMBEDDING_MODEL={model_name!r}: weights not found in {where} ({reason}); "
            "download them once (see docs/embeddings.md), point INGEST_EMBEDDING_CACHE_DIR at "
            "them, or set INGEST_EMBEDDING_ALLOW_DOWNLOAD=1"
        ) from None


class SentenceTransformerEmbedder:
    __slots__ = ("_model", "dim", "model_name", "name")
    max_input_tokens = None  # the model truncates at its own max_seq_length

    def __init__(self, model_name: str, settings: EmbeddingSettings) -> None:
        self._model = load_model(model_name, settings)
        self.model_name = model_name
        self.dim = int(self._model.get_sentence_embedding_dimension() or 0)
        if settings.dimensions is not None and settings.dimensions != self.dim:
            raise ConfigError(
                f"INGEST_EMBEDDING_DIM={settings.dimensions}: model {model_name!r} makes "
                f"{self.dim}-dimension vectors"
            )
        self.name = f"st-{model_name}"

    def batches(self, texts: list[str]) -> list[tuple[int, int]]:
        return fixed_batches(len(texts), LOCAL_BATCH)

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(texts, normalize_embeddings=True)
        return [[float(x) for x in row] for row in vectors]

    def report(self) -> dict[str, Any]:
        return {
            "embedder": "sentence-transformers",
            "model": self.model_name,
            "dimensions": self.dim,
            "requests": 0,
        }
