"""One bounded HTTP GET: checked address, manual redirects (each target checked again),
a deadline on the whole response, and a byte cap."""

from __future__ import annotations

import http.client
import socket
import time
from urllib.parse import urldefrag, urljoin, urlsplit

from ingest_worker.web.netguard import AddressPolicy, FetchRefused, Target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

MAX_REDIRECTS = 5
_READ = 64 * 1024
_ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.8,*/*;q=0.1"


class FetchFailed(Exception):
    """A permanent failure for this URL (4xx, bad redirect, too large)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PageTooLarge(FetchFailed):
    pass


class FetchTemporary(Exception):
    """A failure that may pass: timeout, connection trouble, 429, 5xx."""


class Response:
    __slots__ = ("body", "charset", "content_type", "status", "url")

    def __init__(self, url: str, status: int, content_type: str, charset: str, body: bytes):
        self.url = url
        self.status = status
        self.content_type = content_type
        self.charset = charset
        self.body = body


class Fetcher:
    __slots__ = ("max_bytes", "policy", "timeout", "user_agent")

    def __init__(
        self, policy: AddressPolicy, timeout: float, max_bytes: int, user_agent: str
    ) -> None:
        self.policy = policy
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.user_agent = user_agent

    def get(
        self, url: str, origins: Collection[str] | None = None, max_bytes: int | None = None
    ) -> Response:
        """GET `url`; with `origins`, a redirect leaving them is refused."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        for _ in range(MAX_REDIRECTS + 1):
            target = self.policy.target(url)
            status, location, response = self._once(url, target, limit)
            if location is None:
                assert response is not None
                return response
            url = urldefrag(urljoin(url, location))[0]
            if origins is not None and origin_of(url) not in origins:
                raise FetchFailed(f"redirected off-site to {display(url)}", status)
        raise FetchFailed(f"more than {MAX_REDIRECTS} redirects")

    def _once(
        self, url: str, target: Target, limit: int
    ) -> tuple[int, str | None, Response | None]:
        deadline = time.monotonic() + self.timeout
        conn = _connection(target, self.timeout)
        try:
            path = target.parts.path or "/"
            if target.parts.query:
                path += "?" + target.parts.query
            conn.request(
                "GET",
                path,
                headers={
                    "User-Agent": self.user_agent,
                    "Accept": _ACCEPT,
                    "Accept-Encoding": "identity",
                    "Connection": "close",
                },
            )
            resp = conn.getresponse()
            status = resp.status
            if status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise FetchFailed(f"HTTP {status} without a Location", status)
                return status, location, None
            if status == 429 or status >= 500:
                raise FetchTemporary(f"HTTP {status}")
            if status >= 400:
                raise FetchFailed(f"HTTP {status}", status)
            if status != 200:
                raise FetchFailed(f"unexpected HTTP {status}", status)
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise PageTooLarge(f"larger than the {limit}-byte page cap ({length} bytes)")
            body = _read_capped(resp, limit, deadline, self.timeout)
            ctype, charset = _content_type(resp.getheader("Content-Type") or "")
            return status, None, Response(url, status, ctype, charset, body)
        except FetchRefused:
            raise
        except TimeoutError:
            raise FetchTemporary(f"timed out after {self.timeout:g}s") from None
        except ConnectionRefusedError:
            raise FetchTemporary("connection refused") from None
        except http.client.HTTPException as exc:
            raise FetchTemporary(f"bad HTTP response ({exc.__class__.__name__})") from None
        except OSError as exc:
            if exc.__class__.__name__.startswith("SSLCertVerification"):
                raise FetchFailed("TLS certificate verification failed") from None
            raise FetchTemporary(f"network error ({exc.__class__.__name__})") from None
        finally:
            conn.close()


def _connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        import ssl

        conn = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    ip, port = target.ip, target.port

    def connect_checked(
        address: tuple[str, int], timeout: float | None = None, source: object = None
    ) -> socket.socket:
        # Connect to the address the policy approved, not whatever the name resolves to now.
        return socket.create_connection((ip, port), timeout)

    conn._create_connection = connect_checked  # type: ignore[attr-defined,method-assign,assignment,unused-ignore]
    return conn


def _read_capped(
    resp: http.client.HTTPResponse, limit: int, deadline: float, timeout: float
) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchTemporary(f"timed out after {timeout:g}s")
        piece = resp.read1(_READ)
        if not piece:
            return b"".join(parts)
        total += len(piece)
        if total > limit:
            raise PageTooLarge(f"larger than the {limit}-byte page cap")
        parts.append(piece)


def _content_type(header: str) -> tuple[str, str]:
    ctype, _, params = header.partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'").lower()
    return ctype.strip().lower(), charset


def origin_of(url: str) -> str:
    """scheme://host:port of a URL; raises ValueError for a malformed one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    except ValueError:
        port = 0
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def display(url: str) -> str:
    """A URL for messages: no query string or credentials, which may carry secrets."""

    try:
        parts = urlsplit(url)
    except ValueError:
        return "(malformed URL)"
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    shown = f"{parts.scheme}://{host}{port}{parts.path}"
    # Messages go to stderr as UTF-8: a lone surrogate would make the write itself fail.
    return shown.encode("utf-8", "replace").decode("utf-8")
