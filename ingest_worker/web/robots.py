"""robots.txt, fetched through the same checked fetcher as pages and cached per origin."""

from __future__ import annotations

from urllib.robotparser import RobotFileParser

from ingest_worker.web.fetch import Fetcher, FetchFailed, FetchTemporary, origin_of
from ingest_worker.web.netguard import FetchRefused

MAX_ROBOTS_BYTES = 512 * 1024
_KEEP_OUT = ["User-agent: *", "Disallow: /"]


class Robots:
    __slots__ = ("_cache", "_fetcher", "_user_agent")

    def __init__(self, fetcher: Fetcher, user_agent: str) -> None:
        self._fetcher = fetcher
        self._user_agent = user_agent
        self._cache: dict[str, RobotFileParser] = {}

    def allowed(self, url: str) -> bool:
        origin = origin_of(url)
        rules = self._cache.get(origin)
        if rules is None:
            rules = self._cache[origin] = self._load(url)
        return rules.can_fetch(self._user_agent, url)

    def _load(self, url: str) -> RobotFileParser:
        from urllib.parse import urljoin

        rules = RobotFileParser()
        try:
            resp = self._fetcher.get(urljoin(url, "/robots.txt"), max_bytes=MAX_ROBOTS_BYTES)
        except FetchFailed as exc:
            # As the standard library's reader and the big crawlers do: 401/403 means keep
            # out, any other client error means there are no rules.
            rules.parse(_KEEP_OUT if exc.status in (401, 403) else [])
            return rules
        except FetchRefused:
            # The page itself will be refused for the same reason, and say so.
            rules.parse([])
            return rules
        except (FetchTemporary, OSError):
            # A server that cannot answer for its robots.txt gets no crawl this time.
            rules.parse(_KEEP_OUT)
            return rules
        rules.parse(resp.body.decode("utf-8", errors="replace").splitlines())
        return rules
