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

`require_read` and `require_write` are FastAPI dependencies returning an `Access`: every
tenant, or the one tenant a scoped token (INGEST_API_TENANT_TOKENS) belongs to. A route
takes `access: ReadAccess` (or `WriteAccess`) and shows or changes only jobs that
`access.sees(job.tenant_id)`; `access.require_admin()` refuses scoped tokens outright.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Access:
    """Who is calling: every tenant (`tenant` None) or one tenant's scoped token."""

    tenant: str | None = None
    # No token, let in because INGEST_API_AUTH_READS=0 opened reads: sees what every
    # tenant sees, but is nobody's admin token (its event streams are counted).
    anonymous: bool = False

    def sees(self, tenant_id: str) -> bool:
        return self.tenant is None or self.tenant == tenant_id

    def require_admin(self) -> None:
        if self.tenant is not None:
            raise ApiError(403, "a tenant-scoped token cannot do this")


EVERYONE = Access()
ANONYMOUS_READER = Access(anonymous=True)


def _check(ctx: ApiContext, creds: HTTPAuthorizationCredentials | None) -> Access:
    settings = ctx.settings
    if not settings.auth_enabled:
        return EVERYONE
    given = (creds.credentials if creds is not None else "").encode()
    # Compare against every token, each at equal-time cost whatever the input; never
    # short-circuit on length or on the first match.
    found: Access | None = None
    if settings.token is not None and hmac.compare_digest(given, settings.token.encode()):
        found = EVERYONE
    for tenant, token in settings.tenant_tokens:
        if hmac.compare_digest(given, token.encode()):
            found = Access(tenant)
    if found is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid bearer token",
            headers=UNAUTHORIZED_HEADERS,
        )
    return found


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
) -> Access:
    access = _check(get_context(request), creds)
    refuse_cross_site_post(request)
    return access


async def require_read(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Access:
    ctx = get_context(request)
    if ctx.settings.auth_reads or creds is not None:
        return _check(ctx, creds)
    return ANONYMOUS_READER if ctx.settings.auth_enabled else EVERYONE


ReadAccess = Annotated[Access, Depends(require_read)]
WriteAccess = Annotated[Access, Depends(require_write)]
