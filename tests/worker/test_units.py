"""Pure functions of the worker, tested in-process."""

from __future__ import annotations

import itertools

import pytest

from ingest_worker.chunking import chunk_text, normalise
from ingest_worker.embedding import HashEmbedder


def test_normalise_collapses_spaces_and_blank_lines() -> None:
    assert normalise("\n\n  a   b\t c \r\n\n\n\n d  \n  \n") == "a b c\n\nd"
    assert normalise("x\x00y") == "xy"


def test_chunks_overlap_cut_at_whitespace_and_cover_the_text() -> None:
    words = [f"w{i}" for i in range(400)]
    chunks = chunk_text(" ".join(words), 100, 30)
    assert all(len(c) <= 100 for c in chunks)
    assert all(not c.startswith(" ") and c.split()[0] in words for c in chunks)
    seen = [w for c in chunks for w in c.split()]
    assert set(seen) == set(words)
    for a, b in itertools.pairwise(chunks):
        assert b.split()[0] in a.split(), "consecutive chunks overlap"


def test_chunking_always_progresses_on_unbroken_text() -> None:
    chunks = chunk_text("x" * 1000, 64, 63)
    assert "".join(c[0] for c in chunks) and all(len(c) <= 64 for c in chunks)
    with pytest.raises(ValueError):
        chunk_text("abc", 10, 10)


def test_hash_embedder_is_normalised_and_similar_for_similar_text() -> None:
    emb = HashEmbedder(256)
    a, b, c = emb.embed(["the tide comes in", "The tide, comes in!", "quantum chromodynamics"])
    assert a == b
    assert abs(sum(x * x for x in a) - 1) < 1e-4
    assert sum(x * y for x, y in zip(a, c, strict=True)) < 0.5
    assert emb.embed(["  "]) == [[0.0] * 256]
