"""Readable text and links from HTML with the standard library's parser."""

from __future__ import annotations

from html.parser import HTMLParser

from ingest_worker.cpu_budget import OverBudget, cpu_budget
from ingest_worker.errors import BadInput

# CPU time one document's HTML may take to read: HTML_CPU_SECONDS, and a second more for
# each HTML_BYTES_PER_CPU_SECOND of it past that. Python's parser reads dense markup at 4-5
# MiB a second, and some hostile markup in time quadratic in its length.
HTML_CPU_SECONDS = 10.0
HTML_BYTES_PER_CPU_SECOND = 256 * 1024


def html_cpu_seconds(html: str) -> float:
    return max(HTML_CPU_SECONDS, len(html) / HTML_BYTES_PER_CPU_SECOND)


# Content of these is never text a reader sees.
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object"})
# These start a new line, so words from neighbouring blocks do not run together.
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5",
        "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table",
        "td", "th", "tr", "ul",
    }
)  # fmt: skip
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[str] = []
        self.title_parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _SKIP and tag not in _VOID:
            self._skip_depth += 1
        elif tag in _BLOCK:
            self.parts.append("\n")
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href.strip())

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/> and friends: no matching end tag follows, so never count them as open.
        if tag in _BLOCK:
            self.parts.append("\n")
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIP and self._skip_depth:
            self._skip_depth -= 1
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip_depth:
            self.parts.append(data)


class HtmlText:
    __slots__ = ("links", "text", "title")

    def __init__(self, text: str, title: str, links: list[str]) -> None:
        self.text = text
        self.title = title
        self.links = links


def extract_html(name: str, html: str) -> HtmlText:
    """The text, title and links of a page (BadInput when reading it takes more than
    `html_cpu_seconds`: Python's parser reads some markup in time quadratic in its length)."""
    parser = _Extractor()
    budget = html_cpu_seconds(html)
    try:
        with cpu_budget(budget):
            parser.feed(html)
            parser.close()
    except OverBudget:
        raise BadInput(f"{name}: reading its HTML took more than {budget:g}s of CPU time") from None
    title = " ".join("".join(parser.title_parts).split())
    body = "".join(parser.parts)
    text = f"{title}\n\n{body}" if title else body
    return HtmlText(text, title, parser.links)
