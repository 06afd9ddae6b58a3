"""The FastAPI app: `api.app:app`, configured from the environment at startup."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.context import build_context
from api.errors import install_error_handlers
from api.hosts import TrustedHosts
from api.limits import BodyLimit
from api.models import JobBatch, JobPayload
from api.routes_dashboard import router as dashboard_router
from api.routes_jobs import router as jobs_router
from api.routes_ops import router as ops_router
from api.routes_ui import ui_router
from api.settings import ApiSettings, load_api_settings, load_ui_path
from supervisor import __version__

log = logging.getLogger(__name__)


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """An app; settings are read from the environment at startup unless given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings if settings is not None else load_api_settings()
        if not s.auth_enabled:
            log.warning("INGEST_API_TOKEN is not set: every endpoint is open")
        elif not s.auth_reads:
            log.warning("INGEST_API_AUTH_READS=0: job data is readable without the token")
        ctx = build_context(s)
        app.state.ctx = ctx
        app.state.settings = s
        try:
            yield
        finally:
            await ctx.aclose()

    app = FastAPI(
        title="ingest-supervisor API",
        version=__version__,
        description="Enqueue ingestion jobs, follow their status and progress, and check the "
        "queue's health. When INGEST_API_TOKEN is set, writes and reads of job data need "
        "`Authorization: Bearer $INGEST_API_TOKEN`; a POST must send "
        "`Content-Type: application/json`.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    routers = [jobs_router, ops_router, dashboard_router]
    # Routes exist from creation, before lifespan reads the other settings.
    ui_path = settings.ui_path if settings is not None else load_ui_path()
    if ui_path is not None:
        routers.append(ui_router(ui_path))
    for router in routers:
        app.include_router(router)
    # Every route the app serves, for the Allow header of a 405: the app's own router
    # holds included routers as branches that do not list their routes.
    app.state.served_routes = [*app.router.routes, *(r for rt in routers for r in rt.routes)]

    def body_limit(path: str) -> int:
        s: ApiSettings = getattr(app.state, "settings", None) or ApiSettings()
        return s.max_batch_bytes if path == "/jobs:batch" else s.max_body_bytes

    app.add_middleware(BodyLimit, limit_for=body_limit)

    def allowed_hosts() -> tuple[str, ...]:
        s: ApiSettings = getattr(app.state, "settings", None) or ApiSettings()
        return s.allowed_hosts

    app.add_middleware(TrustedHosts, allowed=allowed_hosts)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        # Request bodies are parsed by the protocol's own validator (its messages are the
        # API's), so their models are added to the document here rather than by FastAPI.
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (JobPayload, JobBatch):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


app = create_app()
