"""Trusted Host headers: a request naming any other host is refused with 400.

A DNS-rebinding page makes a browser send requests to this API under the attacker's own
name; refusing unknown Host values stops it reaching job data. Health endpoints are exempt:
load balancers probe them by address, and they carry no job data.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from api.refusals import send_refusal

EXEMPT_PREFIX = "/health/"


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """`host` (a Host header, maybe with a port) matches a name in `allowed`.

    `*` matches anything; `*.example.com` matches its subdomains.
    """
    name = _strip_port(host.strip().lower())
    for pattern in allowed:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


class TrustedHosts:
    def __init__(self, app: ASGIApp, allowed: Callable[[], tuple[str, ...]]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(EXEMPT_PREFIX):
            await self.app(scope, receive, send)
            return
        host = ""
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
                break
        if host_allowed(host, self.allowed()):
            await self.app(scope, receive, send)
            return
        await send_refusal(
            send,
            400,
            "Host header not allowed (INGEST_API_ALLOWED_HOSTS)",
            "Host",
            "must be one of INGEST_API_ALLOWED_HOSTS",
        )
