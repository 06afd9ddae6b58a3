"""Split text into overlapping chunks of at most `size` characters, cut at whitespace."""

from __future__ import annotations

import re

_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANKS = re.compile(r"\n\s*\n+")


def normalise(text: str) -> str:
    """Collapse runs of spaces and blank lines so chunk sizes measure words, not layout."""
    text = _SPACES.sub(" ", text.replace("\x00", ""))
    text = _BLANKS.sub("\n\n", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def chunk_text(text: str, size: int, overlap: int) -> list[str]:
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("need size > 0 and 0 <= overlap < size")
    n = len(text)
    chunks: list[str] = []
    start = 0
    while start < n:
        end = min(start + size, n)
        if end < n:
            # Prefer a paragraph break, then any whitespace, in the chunk's second half.
            floor = start + size // 2
            cut = text.rfind("\n\n", floor, end)
            if cut <= start:
                cut = max(text.rfind(" ", floor, end), text.rfind("\n", floor, end))
            if cut > start:
                end = cut
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        if end >= n:
            break
        nxt = max(end - overlap, start + 1)
        if nxt < end and overlap:
            # Start the overlap on a word boundary rather than mid-word.
            space = text.find(" ", nxt, end)
            if space != -1:
                nxt = space + 1
        start = nxt
    return chunks
