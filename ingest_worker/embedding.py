"""Embedders: a deterministic, dependency-free hashing embedder by default, and
sentence-transformers when configured (imported only then)."""

from __future__ import annotations

import itertools
import zlib

from ingest_worker.errors import ConfigError, TempFail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ingest_worker.config import WorkerConfig

# Stripped from both ends of whitespace-separated words (str methods, not `re`, to keep
# start-up cheap); inner punctuation stays, so "don't" and "e.g" are single features.
_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u00ab\u00bb\u2018\u2019\u201c\u201d\u2013\u2014\u2026"


class HashEmbedder:
    """Feature hashing of word unigrams and bigrams, signed, L2-normalised.

    Same text, same vector, in every process (crc32, not the salted built-in hash), so retried
    jobs store identical rows and tests can compare vectors.
    """

    __slots__ = ("dim", "name")

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.name = f"hash-{dim}"

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def _one(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        tokens = [t for t in (w.strip(_PUNCT) for w in text.lower().split()) if t]
        features = tokens + [a + " " + b for a, b in itertools.pairwise(tokens)]
        for feature in features:
            h = zlib.crc32(feature.encode())
            vec[h % self.dim] += 1.0 if h & 0x80000000 else -1.0
        norm = sum(v * v for v in vec) ** 0.5
        if norm == 0.0:
            return vec
        return [round(v / norm, 6) for v in vec]


class SentenceTransformerEmbedder:
    __slots__ = ("_model", "dim", "name")

    def __init__(self, model_name: str) -> None:
        try:
            from sentence_transformers import (  # type: ignore[import-not-found,unused-ignore]
                SentenceTransformer,
            )
        except ImportError:
            raise ConfigError(
                "INGEST_EMBEDDER=sentence-transformers needs the sentence-transformers "
                "package, which is not installed here: run "
                "pip install 'ingest-supervisor[embeddings]'"
            ) from None
        try:
            self._model = SentenceTransformer(model_name)
        except OSError as exc:
            # Weights not cached and not downloadable right now: may pass.
            raise TempFail(f"embedding model {model_name!r} could not be loaded: {exc}") from None
        self.dim = int(self._model.get_sentence_embedding_dimension() or 0)
        self.name = f"st-{model_name}"

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(texts, normalize_embeddings=True)
        return [[float(x) for x in row] for row in vectors]


def make_embedder(config: WorkerConfig) -> HashEmbedder | SentenceTransformerEmbedder:
    if config.embedder == "sentence-transformers":
        return SentenceTransformerEmbedder(config.embedding_model)
    return HashEmbedder(config.embedding_dim)
