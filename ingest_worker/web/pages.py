"""A fetched response to text, and the `url` source (one page)."""

from __future__ import annotations

import codecs
from typing import Any

from ingest_worker.documents import Document, Loaded
from ingest_worker.errors import BadInput, TempFail
from ingest_worker.stages import FETCH_END
from ingest_worker.web.fetch import (
    Fetcher,
    FetchFailed,
    FetchTemporary,
    PageTooLarge,
    Response,
    display,
)
from ingest_worker.web.netguard import AddressPolicy, FetchRefused

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ingest_worker.config import WorkerConfig
    from ingest_worker.progress import Reporter

HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/plain", "text/markdown", "text/x-markdown")


class Page:
    __slots__ = ("links", "text", "title")

    def __init__(self, text: str, title: str, links: list[str]) -> None:
        self.text = text
        self.title = title
        self.links = links


class Unsupported(Exception):
    """The response is not a kind of document the worker reads."""


def make_fetcher(config: WorkerConfig) -> Fetcher:
    policy = AddressPolicy(config.allow_private, config.allow_hosts)
    return Fetcher(policy, config.fetch_timeout, config.max_page_bytes, config.user_agent)


def page_of(resp: Response, config: WorkerConfig | None = None) -> Page:
    """The page's text, title and links (BadInput for a document that cannot be read
    within its limits: INGEST_PDF_* from `config`, HTML_CPU_SECONDS)."""
    ctype = resp.content_type
    if ctype == "application/pdf":
        from ingest_worker.sources.pdf import PdfLimits, extract_pdf

        return Page(extract_pdf(display(resp.url), resp.body, PdfLimits.of(config)), "", [])
    if ctype in HTML_TYPES or (not ctype and resp.body.lstrip()[:1] == b"<"):
        from ingest_worker.web.htmltext import extract_html

        html = extract_html(display(resp.url), _decode(resp))
        return Page(html.text, html.title, html.links)
    if ctype in TEXT_TYPES or ctype == "application/json" or not ctype:
        return Page(_decode(resp), "", [])
    raise Unsupported(f"unsupported content type {ctype!r}")


# Python's codecs that no page's charset means: they fail on any text (`undefined`), take
# time quadratic in the body (`punycode`), or read backslash escapes rather than a charset.
_NOT_CHARSETS = frozenset({"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"})


def _decode(resp: Response) -> str:
    """The body as text in the charset the page names; in UTF-8 when that names no text
    codec (LookupError, or no codec name at all: ValueError) or one of _NOT_CHARSETS."""
    try:
        codec = codecs.lookup(resp.charset or "utf-8")
        if codec.name not in _NOT_CHARSETS:
            return resp.body.decode(codec.name, errors="replace")
    except (LookupError, ValueError):
        pass
    return resp.body.decode("utf-8", errors="replace")


def load_url(source: dict[str, Any], config: WorkerConfig, reporter: Reporter) -> Loaded:
    url = source.get("url")
    if not isinstance(url, str) or not url:
        raise BadInput("data_source.url: is required for a url source and must be a string")
    reporter.progress(5, f"fetching {display(url)}")
    fetcher = make_fetcher(config)
    try:
        resp = fetcher.get(url)
        page = page_of(resp, config)
    except FetchRefused as exc:
        raise BadInput(f"{display(url)}: {exc}") from None
    except PageTooLarge as exc:
        raise BadInput(f"{display(url)}: {exc} (INGEST_MAX_PAGE_BYTES)") from None
    except (FetchFailed, Unsupported) as exc:
        raise BadInput(f"{display(url)}: {exc}") from None
    except (FetchTemporary, OSError) as exc:
        raise TempFail(f"{display(url)}: {exc}") from None
    loaded = Loaded()
    loaded.bytes_read = len(resp.body)
    meta: dict[str, object] = {"url": resp.url}
    if page.title:
        meta["title"] = page.title
    loaded.documents.append(Document(resp.url, page.text, meta))
    reporter.progress(FETCH_END - 5, f"fetched {display(resp.url)}")
    return loaded
