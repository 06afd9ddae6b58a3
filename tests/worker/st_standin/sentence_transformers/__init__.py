"""A stand-in for the sentence-transformers package (torch is too large for these machines).

It keeps the part of the real API the worker calls: `SentenceTransformer(name,
cache_folder=..., local_files_only=...)` raising OSError when the weights are not in the
cache and may not be downloaded (as huggingface_hub's LocalEntryNotFoundError does),
`get_sentence_embedding_dimension()` and `encode(texts, normalize_embeddings=True)`.
A "model" in the cache is a directory holding config.json with its dimension.
"""

from __future__ import annotations

import json
import os
import zlib


class SentenceTransformer:
    def __init__(
        self,
        model_name_or_path: str,
        cache_folder: str | None = None,
        local_files_only: bool = False,
    ) -> None:
        cache = cache_folder or os.environ.get("HF_HOME") or os.path.expanduser("~/.cache")
        path = os.path.join(cache, model_name_or_path.replace("/", "--"), "config.json")
        if not os.path.exists(path):
            if local_files_only:
                raise OSError(
                    f"Cannot find the requested files in the local cache: {model_name_or_path}"
                )
            raise OSError("We couldn't connect to 'https://huggingface.co' to load this model")
        with open(path) as f:
            self._dim = int(json.load(f)["dimension"])

    def get_sentence_embedding_dimension(self) -> int:
        return self._dim

    def encode(self, texts: list[str], normalize_embeddings: bool = False) -> list[list[float]]:
        out = []
        for text in texts:
            seed = zlib.crc32(text.encode())
            row = [float((seed >> (i % 24)) & 7) + 1.0 for i in range(self._dim)]
            norm = sum(x * x for x in row) ** 0.5 if normalize_embeddings else 1.0
            out.append([x / norm for x in row])
        return out
