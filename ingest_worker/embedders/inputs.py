"""Fitting inputs to an embeddings API: per-input length limits and per-request budgets.

Tokens are estimated as UTF-8 bytes. Byte-level BPE tokenizers (OpenAI's, and most models
served behind the same protocol) never make a token of less than one byte, so the estimate
is never below the real count: a request planned within a budget stays within it.
"""

from __future__ import annotations

from typing import Any


def token_estimate(text: str) -> int:
    return len(text.encode("utf-8"))


def plan_batches(sizes: list[int], max_count: int, max_tokens: int) -> list[tuple[int, int]]:
    """[start, end) slices with at most `max_count` inputs and `max_tokens` estimated tokens.

    Every single size must already be within `max_tokens` (see `fit_chunks`).
    """
    out: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_count or used + size > max_tokens):
            out.append((start, i))
            start, used = i, 0
        used += size
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


def _head(text: str, limit: int) -> str:
    """The longest prefix of `text` within `limit` UTF-8 bytes, cut on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def split_text(text: str, limit: int) -> list[str]:
    """Consecutive pieces of at most `limit` bytes, cut at whitespace in a piece's second half
    when there is some."""
    pieces: list[str] = []
    rest = text
    while token_estimate(rest) > limit:
        head = _head(rest, limit)
        floor = len(head) // 2
        cut = head.rfind("\n\n", floor)
        if cut <= 0:
            cut = max(head.rfind(" ", floor), head.rfind("\n", floor))
        if cut <= 0:
            cut = len(head)
        piece = rest[:cut].strip()
        if piece:
            pieces.append(piece)
        rest = rest[cut:].lstrip()
    if rest.strip():
        pieces.append(rest)
    return pieces


def fit_chunks(
    chunks: list[dict[str, Any]], limit: int, mode: str
) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """Chunks, the text to embed for each, and a record of every chunk changed to fit.

    `split` replaces an over-long chunk by consecutive chunks that fit (numbered anew);
    `truncate` keeps the chunk whole in the store and embeds its first `limit` bytes.
    """
    out: list[dict[str, Any]] = []
    inputs: list[str] = []
    adjusted: list[dict[str, Any]] = []
    for chunk in chunks:
        text = chunk["content"]
        size = token_estimate(text)
        if size <= limit:
            out.append(chunk)
            inputs.append(text)
            continue
        over = f"{size} bytes, over INGEST_EMBEDDING_MAX_INPUT_TOKENS={limit}"
        if mode == "truncate":
            out.append(chunk)
            inputs.append(_head(text, limit))
            reason = f"{over}: embedded its first {limit} bytes"
        else:
            pieces = split_text(text, limit)
            for piece in pieces:
                out.append({**chunk, "content": piece, "metadata": dict(chunk["metadata"])})
                inputs.append(piece)
            reason = f"{over}: split into {len(pieces)} chunks"
        adjusted.append(
            {"chunk_index": chunk["chunk_index"], "source": chunk["source"], "reason": reason}
        )
    for index, chunk in enumerate(out):
        chunk["chunk_index"] = index
    return out, inputs, adjusted
