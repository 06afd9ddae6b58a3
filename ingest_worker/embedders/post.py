"""One HTTP POST with a deadline on the whole exchange (connect, send, headers, body).

A per-read socket timeout alone lets a server that trickles bytes hold a request for ever;
here a timer shuts the socket down at the deadline, which ends any blocked read.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 256 * 1024 * 1024
_READ = 256 * 1024


class ResponseTooLarge(Exception):
    """The answer was larger than the caller allows (`max_bytes`)."""


class PostFailed(Exception):
    """No HTTP response: connection refused or reset, timeout, malformed response.

    Always worth retrying; the message says what happened without the URL's credentials.
    """


class Reply:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class Endpoint:
    """A parsed base URL; `path` is appended to the base's path."""

    __slots__ = ("base_path", "host", "port", "scheme")

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        try:
            self.port = parts.port or (443 if self.scheme == "https" else 80)
        except ValueError:
            self.port = 0
        self.base_path = parts.path.rstrip("/")

    def display(self, path: str) -> str:
        """The URL for messages: never userinfo or query."""
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.base_path}{path}"


def post(
    endpoint: Endpoint,
    path: str,
    headers: dict[str, str],
    body: bytes,
    timeout: float,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> Reply:
    deadline = time.monotonic() + timeout
    conn: http.client.HTTPConnection
    if endpoint.scheme == "https":
        import ssl

        conn = http.client.HTTPSConnection(
            endpoint.host, endpoint.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(timeout, cut)
    timer.daemon = True
    timer.start()
    try:
        conn.request("POST", endpoint.base_path + path, body=body, headers=headers)
        resp = conn.getresponse()
        parts: list[bytes] = []
        total = 0
        while True:
            piece = resp.read1(_READ)
            if not piece:
                break
            total += len(piece)
            if total > max_bytes:
                raise ResponseTooLarge(f"the response is larger than {max_bytes} bytes")
            parts.append(piece)
        if expired.is_set() or time.monotonic() > deadline:
            # The cut may end a read cleanly: a body cut short is no body.
            raise TimeoutError
        if resp.length not in (None, 0):  # the server closed before Content-Length bytes
            raise http.client.IncompleteRead(b"".join(parts))
        found = {k.lower(): v for k, v in resp.getheaders()}
        return Reply(resp.status, found, b"".join(parts))
    except PostFailed:
        raise
    except TimeoutError:
        raise PostFailed(f"no complete response within {timeout:g}s") from None
    except OSError as exc:
        if expired.is_set():
            raise PostFailed(f"no complete response within {timeout:g}s") from None
        if exc.__class__.__name__.startswith("SSLCertVerification"):
            raise PostFailed("TLS certificate verification failed") from None
        raise PostFailed(f"network error ({exc.__class__.__name__})") from None
    except http.client.HTTPException as exc:
        if expired.is_set():
            raise PostFailed(f"no complete response within {timeout:g}s") from None
        raise PostFailed(f"bad HTTP response ({exc.__class__.__name__})") from None
    finally:
        timer.cancel()
        conn.close()
