"""Split text into overlapping chunks of at most `size` characters, cut at whitespace."""

from __future__ import annotations


def storable(text: str) -> str:
    """`text` as every chunk store and the embedding API can take it: without NUL (which
    PostgreSQL's text and jsonb refuse) and with each lone surrogate (which no UTF-8 can
    hold; a page in UTF-7 or a PDF's ToUnicode map can make one) replaced by U+FFFD."""
    text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def normalise(text: str) -> str:
    """Collapse runs of spaces and blank lines so chunk sizes measure words, not layout;
    the text made `storable`.

    String methods rather than `re`: importing `re` would double a tiny job's start-up.
    """
    lines: list[str] = []
    blank = True  # drops leading blank lines
    for line in storable(text).replace("\r\n", "\n").split("\n"):
        words = line.split()
        if words:
            lines.append(" ".join(words))
            blank = False
        elif not blank:
            lines.append("")
            blank = True
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


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
