"""One bounded HTTP GET: checked address, manual redirects (each target checked again),
one deadline on the whole exchange (connect, headers and body), and a byte cap on the body
as sent and as decoded (gzip)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import zlib
from urllib.parse import urldefrag, urljoin, urlsplit

from ingest_worker.web.netguard import AddressPolicy, FetchRefused, Target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

MAX_REDIRECTS = 5
_READ = 64 * 1024
# zlib's window bits that accept a gzip or a zlib header alike.
_GZIP_OR_ZLIB = 32 + zlib.MAX_WBITS
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
        watch = _Deadline(self.timeout)
        conn = _connection(target, self.timeout, watch)
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
                    "Accept-Encoding": "gzip, identity;q=0.5",
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
            decoder = _decoder(resp.getheader("Content-Encoding") or "", status)
            body = _read_capped(resp, limit, deadline, self.timeout, decoder)
            if watch.expired:  # the socket was shut: what arrived may be cut short
                raise TimeoutError
            ctype, charset = _content_type(resp.getheader("Content-Type") or "")
            return status, None, Response(url, status, ctype, charset, body)
        except (FetchRefused, FetchFailed, FetchTemporary):
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise self._transport_error(exc, watch.expired) from None
        finally:
            watch.cancel()
            conn.close()

    def _transport_error(self, exc: Exception, expired: bool) -> Exception:
        """The fetch error a transport failure stands for."""
        if expired or isinstance(exc, TimeoutError):
            return FetchTemporary(f"timed out after {self.timeout:g}s")
        if isinstance(exc, ConnectionRefusedError):
            return FetchTemporary("connection refused")
        if isinstance(exc, http.client.HTTPException):
            return FetchTemporary(f"bad HTTP response ({exc.__class__.__name__})")
        if exc.__class__.__name__.startswith("SSLCertVerification"):
            return FetchFailed("TLS certificate verification failed")
        return FetchTemporary(f"network error ({exc.__class__.__name__})")


class _Deadline:
    """Shuts the connection's socket down when the whole exchange's time is up.

    A socket timeout bounds each read alone, so a server that sends a byte now and then
    could hold the header phase for ever; this bounds connect, headers and body together.
    """

    __slots__ = ("_lock", "_sock", "_timer", "expired")

    def __init__(self, timeout: float) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.expired = False
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shut(self._sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _connection(target: Target, timeout: float, watch: _Deadline) -> http.client.HTTPConnection:
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
        sock = socket.create_connection((ip, port), timeout)
        watch.watch(sock)
        return sock

    conn._create_connection = connect_checked  # type: ignore[attr-defined,method-assign,assignment,unused-ignore]
    return conn


def _decoder(encoding: str, status: int) -> zlib._Decompress | None:
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(_GZIP_OR_ZLIB)
    raise FetchFailed(f"unsupported Content-Encoding {coding[:40]!r}", status)


def _read_capped(
    resp: http.client.HTTPResponse,
    limit: int,
    deadline: float,
    timeout: float,
    decoder: zlib._Decompress | None = None,
) -> bytes:
    """The body, at most `limit` bytes as sent and, when compressed, as decoded too."""
    parts: list[bytes] = []
    sent = 0
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise FetchTemporary(f"timed out after {timeout:g}s")
        piece = resp.read1(_READ)
        if not piece:
            if decoder is not None and not decoder.eof:
                raise FetchTemporary("compressed body ended early")
            return b"".join(parts)
        sent += len(piece)
        if sent > limit:
            raise PageTooLarge(f"larger than the {limit}-byte page cap")
        if decoder is not None:
            piece = _inflate(decoder, piece, limit - total, limit)
        total += len(piece)
        parts.append(piece)


def _inflate(decoder: zlib._Decompress, data: bytes, room: int, limit: int) -> bytes:
    """Decode `data` into at most `room` bytes; a bomb stops at the cap, never inflated."""
    try:
        out = decoder.decompress(data, room + 1)
    except zlib.error:
        raise FetchFailed("compressed body is corrupt") from None
    if len(out) > room:
        raise PageTooLarge(f"larger than the {limit}-byte page cap once decompressed")
    return out


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
