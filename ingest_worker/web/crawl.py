"""The `crawl` source: breadth-first over one site from the seed URLs, within caps."""

from __future__ import annotations

from collections import deque
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

from ingest_worker.documents import Document, Loaded
from ingest_worker.errors import BadInput, TempFail
from ingest_worker.stages import FETCH_END, FETCH_START
from ingest_worker.web.fetch import FetchFailed, FetchTemporary, display, origin_of
from ingest_worker.web.netguard import FetchRefused
from ingest_worker.web.pages import Unsupported, make_fetcher, page_of
from ingest_worker.web.robots import Robots

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ingest_worker.config import WorkerConfig
    from ingest_worker.progress import Reporter


# A crawl requests at most this many URLs per page it may keep (dead links and unreadable
# pages count; robots.txt refusals send no request and do not), and remembers at most this
# many links per page.
TRIES_PER_PAGE = 4
SEEN_PER_PAGE = 20


def _seeds(source: dict[str, Any]) -> list[str]:
    raw = source.get("urls", source.get("url"))
    urls = [raw] if isinstance(raw, str) else raw
    if not isinstance(urls, list) or not urls:
        raise BadInput("data_source.urls: is required for a crawl source (a list of URLs)")
    out: list[str] = []
    for url in urls:
        if not isinstance(url, str) or not url:
            raise BadInput("data_source.urls: every URL must be a non-empty string")
        try:
            scheme = urlsplit(url).scheme.lower()
            origin_of(url)
        except ValueError as exc:
            raise BadInput(f"data_source.urls: malformed URL ({exc})") from None
        if scheme not in ("http", "https"):
            raise BadInput(f"data_source.urls: only http and https URLs, not {display(url)!r}")
        out.append(_normal(url))
    return out


def _limit(source: dict[str, Any], key: str, default: int, cap: int) -> int:
    value = source.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInput(f"data_source.{key}: must be a non-negative integer")
    return min(value, cap)


def _normal(url: str) -> str:
    url = urldefrag(url)[0]
    parts = urlsplit(url)
    return url if parts.path else url + "/"


def load_crawl(source: dict[str, Any], config: WorkerConfig, reporter: Reporter) -> Loaded:
    seeds = _seeds(source)
    max_depth = _limit(source, "crawl_depth", 1, config.crawl_max_depth)
    max_pages = _limit(source, "max_pages", config.crawl_max_pages, config.crawl_max_pages) or 1
    origins = {origin_of(u) for u in seeds}
    fetcher = make_fetcher(config)
    robots = Robots(fetcher, config.user_agent)
    queue: deque[tuple[str, int]] = deque((u, 0) for u in dict.fromkeys(seeds))
    seen = set(seeds)
    # Pages that fail count too: a site of dead links must not cost a request each.
    max_tries = TRIES_PER_PAGE * max_pages
    max_seen = SEEN_PER_PAGE * max_pages + len(seeds)
    tries = 0
    loaded = Loaded()
    temporary = 0
    reporter.progress(FETCH_START, f"crawling {len(seeds)} seed URL(s) to depth {max_depth}")
    while queue and len(loaded.documents) < max_pages and tries < max_tries:
        url, depth = queue.popleft()
        shown = display(url)
        try:
            if not robots.allowed(url):  # no request: no try spent
                loaded.skip(url, "disallowed by robots.txt")
                continue
            tries += 1
            resp = fetcher.get(url, origins=origins)
            page = page_of(resp, config)
        except FetchRefused as exc:
            loaded.skip(url, f"refused: {exc}")
            continue
        except (FetchFailed, Unsupported, BadInput) as exc:  # one bad page is not the crawl
            loaded.skip(url, str(exc))
            continue
        except (FetchTemporary, OSError) as exc:
            temporary += 1
            loaded.skip(url, f"temporary: {exc}")
            continue
        if loaded.bytes_read + len(resp.body) > config.max_total_bytes:
            loaded.skip(url, f"total byte cap ({config.max_total_bytes}) reached")
            break
        loaded.bytes_read += len(resp.body)
        meta: dict[str, object] = {"url": resp.url, "depth": depth}
        if page.title:
            meta["title"] = page.title
        loaded.documents.append(Document(resp.url, page.text, meta))
        if depth < max_depth:
            for link in page.links:
                if len(seen) >= max_seen:
                    break
                try:
                    nxt = _normal(urljoin(resp.url, link))
                    origin = origin_of(nxt)
                except ValueError as exc:
                    # One bad link on a page is skipped with its reason, not the crawl.
                    loaded.skip(display(link), f"invalid link ({exc})")
                    continue
                if nxt not in seen and origin in origins:
                    seen.add(nxt)
                    queue.append((nxt, depth + 1))
        done = len(loaded.documents)
        expected = done + min(len(queue), max_pages - done)
        reporter.stage(FETCH_START, FETCH_END, done, expected, f"fetched {done} page(s): {shown}")
    if queue and len(loaded.documents) >= max_pages:
        loaded.skip("crawl", f"page cap ({max_pages}) reached; {len(queue)} URL(s) not fetched")
    elif queue:
        loaded.skip("crawl", f"{tries} URLs tried for {max_pages} page(s); {len(queue)} not tried")
    if not loaded.documents:
        reasons = "; ".join(f"{display(s['source'])}: {s['reason']}" for s in loaded.skipped[:3])
        if temporary:
            raise TempFail(f"no page could be fetched ({reasons})")
        raise BadInput(f"no page could be ingested ({reasons})")
    return loaded
