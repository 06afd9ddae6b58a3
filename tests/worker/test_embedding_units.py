"""Pure parts of the HTTP embedder: request planning, fitting long inputs, Retry-After."""

from __future__ import annotations

import email.utils
import itertools
import time

import pytest

from ingest_worker.embedders.inputs import fit_chunks, plan_batches, split_text, token_estimate
from ingest_worker.embedders.openai_api import retry_after


def test_plan_batches_bounds_count_and_tokens_and_covers_everything() -> None:
    sizes = [5, 5, 5, 9, 1, 1, 1, 1, 10, 3]
    plan = plan_batches(sizes, max_count=3, max_tokens=10)
    assert plan[0][0] == 0 and plan[-1][1] == len(sizes)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))
    for start, end in plan:
        assert 1 <= end - start <= 3 and sum(sizes[start:end]) <= 10
    assert plan_batches([], 3, 10) == []


@pytest.mark.parametrize("text", ["word " * 500, "é" * 3000, "\U0001f600" * 900, "x" * 5000])
def test_split_text_fits_every_piece_and_loses_nothing(text: str) -> None:
    pieces = split_text(text, 256)
    assert all(token_estimate(p) <= 256 for p in pieces)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")


def test_fit_chunks_renumbers_and_records_reasons() -> None:
    chunks = [
        {"chunk_index": i, "source": "s", "content": c, "metadata": {"k": i}}
        for i, c in enumerate(["short", "long " * 100, "tail"])
    ]
    out, inputs, adjusted = fit_chunks(chunks, 64, "split")
    assert [c["chunk_index"] for c in out] == list(range(len(out)))
    assert inputs == [c["content"] for c in out] and len(out) > 3
    assert [a["chunk_index"] for a in adjusted] == [1] and "split into" in adjusted[0]["reason"]
    assert out[-1]["content"] == "tail" and out[1]["metadata"] == {"k": 1}


def test_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    got = retry_after({"retry-after": later})
    assert got is not None and 25 <= got <= 31
    for bad in ({}, {"retry-after": "soon"}, {"retry-after": "-1"}, {"retry-after": "nan"}):
        assert retry_after(bad) is None
