"""Who may call what.

- Writes and admin (`require_write`) need `Authorization: Bearer $INGEST_API_TOKEN` when the
  token is set, and are never a CORS "simple request": a POST must declare a JSON content
  type (or, with no body, carry the Authorization header), so a page on another origin
  cannot enqueue or cancel through a visitor's browser (CSRF).
- Reads of job data (`require_read`: GET /jobs*, /events, /workers, and any page built on
  them such as a dashboard) need the same token whenever one is set, unless the operator
  opens them with INGEST_API_AUTH_READS=0.
- Health and metrics stay open: they carry no job data and load balancers cannot send
  tokens.

`require_read` and `require_write` are FastAPI dependencies; a new router protects its
routes with `dependencies=[Depends(require_read)]`.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.context import ApiContext, get_context
from api.errors import ApiError

bearer = HTTPBearer(
    auto_error=False,
    description="INGEST_API_TOKEN; required for writes, and for reads unless "
    "INGEST_API_AUTH_READS=0",
)

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="ingest"'}


def _check(ctx: ApiContext, creds: HTTPAuthorizationCredentials | None) -> None:
    expected = ctx.settings.token
    if expected is None:
        return
    given = creds.credentials if creds is not None else ""
    # Compare bytes of equal-time cost whatever the input; never short-circuit on length.
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail="missing or invalid bearer token",
            headers=UNAUTHORIZED_HEADERS,
        )


def is_json_content_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def refuse_cross_site_post(request: Request) -> None:
    """415 for a POST a browser could send from any origin without asking (CSRF)."""
    if request.method != "POST":
        return  # DELETE and the rest always need a CORS preflight, which we never grant
    headers = request.headers
    if is_json_content_type(headers.get("content-type", "")):
        return
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    if not has_body and "authorization" in headers:
        return  # a custom header already makes it a preflighted request
    rule = "must be application/json"
    raise ApiError(415, f"Content-Type: {rule}", field="Content-Type", rule=rule)


async def require_write(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    _check(get_context(request), creds)
    refuse_cross_site_post(request)


async def require_read(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    ctx = get_context(request)
    if ctx.settings.auth_reads:
        _check(ctx, creds)
