"""Bearer-token auth: required for writes and admin when INGEST_API_TOKEN is set, optionally
for reads of job data (INGEST_API_AUTH_READS=1). Health and metrics stay open: they carry no
job data and load balancers cannot send tokens."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.context import ApiContext, get_context

bearer = HTTPBearer(
    auto_error=False,
    description="INGEST_API_TOKEN; required for writes, and for reads when INGEST_API_AUTH_READS=1",
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


async def require_write(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    _check(get_context(request), creds)


async def require_read(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    ctx = get_context(request)
    if ctx.settings.auth_reads:
        _check(ctx, creds)
