"""Embedders: a deterministic, dependency-free hashing embedder by default; sentence-transformers
or an OpenAI-protocol HTTP API when configured (their modules are imported only then)."""

from __future__ import annotations

import itertools
import zlib

from ingest_worker.embedders.batches import LOCAL_BATCH, fixed_batches

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from ingest_worker.config import WorkerConfig

    class Embedder(Protocol):
        name: str

        @property
        def max_input_tokens(self) -> int | None:
            """Longest input in tokens (estimated as UTF-8 bytes); None: any length."""

        def batches(self, texts: list[str]) -> list[tuple[int, int]]:
            """Consecutive [start, end) slices of `texts`, one request each."""

        def embed(self, texts: list[str]) -> list[list[float]]:
            """One vector per text, all of one size, in order."""

        def report(self) -> dict[str, Any]:
            """What the RESULT line records: embedder, model, dimensions, requests, tokens."""


# Stripped from both ends of whitespace-separated words (str methods, not `re`, to keep
# start-up cheap); inner punctuation stays, so "don't" and "e.g" are single features.
_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u00ab\u00bb\u2018\u2019\u201c\u201d\u2013\u2014\u2026"


class HashEmbedder:
    """Feature hashing of word unigrams and bigrams, signed, L2-normalised.

    Same text, same vector, in every process (crc32, not the salted built-in hash), so retried
    jobs store identical rows and tests can compare vectors.
    """

    __slots__ = ("dim", "name")
    max_input_tokens = None

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.name = f"hash-{dim}"

    def batches(self, texts: list[str]) -> list[tuple[int, int]]:
        return fixed_batches(len(texts), LOCAL_BATCH)

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def report(self) -> dict[str, Any]:
        return {"embedder": "hash", "model": self.name, "dimensions": self.dim, "requests": 0}

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


def make_embedder(config: WorkerConfig, notify: Callable[[str], None] | None = None) -> Embedder:
    """The configured embedder; `notify` receives waits worth showing (rate limits)."""
    if config.embedder == "hash":
        return HashEmbedder(config.embedding_dim)
    assert config.embedding is not None
    if config.embedder == "sentence-transformers":
        from ingest_worker.embedders.sentence import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(config.embedding_model, config.embedding)
    from ingest_worker.embedders.openai_api import OpenAIEmbedder

    return OpenAIEmbedder(config.embedding_model, config.embedding, notify)
