"""One error body for every error response, and the handlers that produce it.

Validation errors name the field and the rule; payload errors carry PayloadError's own field
and rule, so the API says exactly what `JobQueue.enqueue` would have said.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from api.models import ErrorBody
from supervisor.queue.payload import PayloadError, TenantConflict

log = logging.getLogger(__name__)
Responses = dict[int | str, dict[str, Any]]


class ApiError(HTTPException):
    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        field: str | None = None,
        rule: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.field = field
        self.rule = rule


def payload_error(exc: PayloadError, prefix: str = "") -> ApiError:
    field = f"{prefix}{exc.field}" if prefix else exc.field
    # Another tenant's id: a conflict with existing state, not a malformed payload.
    status = 409 if isinstance(exc, TenantConflict) else 422
    return ApiError(status, f"{field}: {exc.rule}", field=field, rule=exc.rule)


def _body(detail: str, field: str | None = None, rule: str | None = None) -> dict[str, Any]:
    return ErrorBody(detail=detail, field=field, rule=rule).model_dump()


def _describe(name: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": name}


# Declared per route so the OpenAPI document lists every error a route can answer with.
E401: Responses = {401: _describe("missing or invalid bearer token")}
E403: Responses = {403: _describe("a tenant-scoped token may not do this")}
E404: Responses = {404: _describe("no such job")}
E409: Responses = {409: _describe("the job's state does not allow this")}
E413: Responses = {413: _describe("request body too large")}
E415: Responses = {415: _describe("a POST without Content-Type: application/json")}
E422: Responses = {422: _describe("invalid input; names the field and the rule")}
E429: Responses = {429: _describe("too many event streams open for this caller's count")}
E503: Responses = {503: _describe("Redis unavailable or too slow")}


def _allowed_methods(req: Request) -> str:
    """Every method any route serves at this path: Starlette names only the first route's."""
    methods: set[str] = set()
    for route in getattr(req.app.state, "served_routes", req.app.router.routes):
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**req.scope, "method": "GET"})
            if match is not Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    async def http_error(req: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        field = getattr(exc, "field", None)
        rule = getattr(exc, "rule", None)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(req)
        return JSONResponse(
            _body(str(exc.detail), field, rule), status_code=exc.status_code, headers=headers
        )

    async def validation_error(_req: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "request"
        rule = str(first.get("msg", "invalid"))
        # Never echo the input back: it may hold a secret.
        return JSONResponse(_body(f"{field}: {rule}", field, rule), status_code=422)

    async def redis_down(_req: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis call failed: %s", type(exc).__name__)
        return JSONResponse(
            _body("queue store (Redis) unavailable; try again"),
            status_code=503,
            headers={"Retry-After": "1"},
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RedisError, redis_down)
    app.add_exception_handler(asyncio.TimeoutError, redis_down)
    app.add_exception_handler(OSError, redis_down)
