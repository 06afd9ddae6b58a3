"""Request batches of the local embedders (hashing, sentence-transformers)."""

from __future__ import annotations

LOCAL_BATCH = 64


def fixed_batches(count: int, size: int) -> list[tuple[int, int]]:
    """Consecutive [start, end) slices of `count` texts, `size` at most each."""
    return [(start, min(start + size, count)) for start in range(0, count, size)]
