"""The operator's dashboard: three static files (api/static) served under the UI path.

The page is plain HTML and JavaScript calling the JSON API; nothing is rendered on the
server. A strict Content-Security-Policy allows only these same-origin files to run, so even
a slip that put job text into markup could not execute it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("api").joinpath("static", name).read_bytes()


def ui_router(path: str) -> APIRouter:
    """Routes serving the dashboard at `path` (e.g. /ui); the API stays at the root."""
    # The page finds the API by a relative URL, so it works behind a proxy's path prefix too.
    api_root = "../" * path.count("/")
    index = _read("index.html").replace(b"__API_ROOT__", api_root.encode())
    assets = {name: _read(name) for name in FILES}
    router = APIRouter(include_in_schema=False)

    @router.get(path)
    async def ui_redirect() -> RedirectResponse:
        return RedirectResponse(path.rsplit("/", 1)[1] + "/", status_code=308)

    @router.get(path + "/")
    async def ui_index() -> Response:
        return Response(index, media_type="text/html; charset=utf-8", headers=HEADERS)

    for name, media_type in FILES.items():
        router.add_api_route(f"{path}/{name}", _asset(assets[name], media_type), methods=["GET"])
    return router


def _asset(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        return Response(body, media_type=media_type, headers=HEADERS)

    return serve
