"""What sources hand to the pipeline: documents of text, and reasons things were skipped."""

from __future__ import annotations


class Document:
    __slots__ = ("meta", "source", "text")

    def __init__(self, source: str, text: str, meta: dict[str, object] | None = None) -> None:
        self.source = source
        self.text = text
        self.meta: dict[str, object] = meta or {}


class Loaded:
    """A source's yield: documents, bytes read, and every skipped item with its reason."""

    __slots__ = ("bytes_read", "documents", "skipped")

    def __init__(self) -> None:
        self.documents: list[Document] = []
        self.bytes_read = 0
        self.skipped: list[dict[str, str]] = []

    def skip(self, source: str, reason: str) -> None:
        self.skipped.append({"source": source, "reason": reason})
