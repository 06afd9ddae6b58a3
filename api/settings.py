"""The API's settings, read once from the environment into one frozen object: the shared
ones (`supervisor.config`: Redis, queue, secret keys, attempts, status store) and its own."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from supervisor.config import ConfigError, SharedConfig, load_shared_config, parse_bool

# Raised for an invalid API setting; the same class as the shared settings' error.
ApiSettingsError = ConfigError


@dataclass(frozen=True)
class ApiSettings(SharedConfig):
    token: str | None = None
    auth_reads: bool = False
    # /health/queue: unhealthy above this many waiting jobs, or when the oldest waiting job
    # has waited longer than this; 0 disables either check.
    max_backlog: int = 1000
    max_wait_s: float = 600.0
    # Budget of each Redis call a health check makes; the whole check runs them concurrently,
    # so it answers within about this long even when Redis hangs.
    health_timeout_s: float = 0.5
    max_body_bytes: int = 256 * 1024
    max_batch_bytes: int = 8 * 1024 * 1024
    max_batch_jobs: int = 1000
    # Where the dashboard is served; None turns it off.
    ui_path: str | None = "/ui"


def _bool(name: str, raw: str) -> bool:
    try:
        return parse_bool(raw)
    except ValueError:
        raise ApiSettingsError(f"{name}={raw!r}: must be a boolean (1/0, true/false)") from None


def _num(name: str, raw: str, kind: type[int] | type[float], minimum: float) -> float:
    try:
        value = kind(raw)
    except ValueError:
        raise ApiSettingsError(f"{name}={raw!r}: must be a number") from None
    if value < minimum:
        raise ApiSettingsError(f"{name}={raw!r}: must be >= {minimum}")
    return value


UI_PATH_RE = re.compile(r"^(/[A-Za-z0-9_.-]{1,64}){1,4}$")
# First path segments the API's own routes use; the dashboard may not shadow them.
API_ROOTS = frozenset(
    {
        "jobs",
        "health",
        "workers",
        "metrics",
        "events",
        "queues",
        "stats",
        "dead-letters",
        "docs",
        "redoc",
        "openapi.json",
    }
)


def load_ui_path(env: Mapping[str, str] | None = None) -> str | None:
    """INGEST_UI_PATH: the dashboard's path (default /ui); `off` turns the dashboard off."""
    env = os.environ if env is None else env
    raw = env.get("INGEST_UI_PATH", "/ui").strip()
    if raw.lower() in ("off", "none", "0", "false"):
        return None
    path = raw.rstrip("/") or "/"
    segments = path.split("/")[1:]
    if not UI_PATH_RE.match(path) or segments[0] in API_ROOTS or {".", ".."} & set(segments):
        raise ApiSettingsError(
            f"INGEST_UI_PATH={raw!r}: must be 1-4 segments like /ui of letters, digits, '_.-' "
            "not used by the API (or off)"
        )
    return path


def load_api_settings(env: Mapping[str, str] | None = None) -> ApiSettings:
    env = os.environ if env is None else env
    shared = load_shared_config(env)
    return ApiSettings(
        **asdict(shared),
        token=env.get("INGEST_API_TOKEN") or None,
        auth_reads=_bool("INGEST_API_AUTH_READS", env.get("INGEST_API_AUTH_READS", "0")),
        max_backlog=int(
            _num("INGEST_HEALTH_MAX_BACKLOG", env.get("INGEST_HEALTH_MAX_BACKLOG", "1000"), int, 0)
        ),
        max_wait_s=_num(
            "INGEST_HEALTH_MAX_WAIT_SECONDS",
            env.get("INGEST_HEALTH_MAX_WAIT_SECONDS", "600"),
            float,
            0,
        ),
        health_timeout_s=_num(
            "INGEST_HEALTH_TIMEOUT_SECONDS",
            env.get("INGEST_HEALTH_TIMEOUT_SECONDS", "0.5"),
            float,
            0.05,
        ),
        max_batch_jobs=int(
            _num("INGEST_API_MAX_BATCH_JOBS", env.get("INGEST_API_MAX_BATCH_JOBS", "1000"), int, 1)
        ),
        ui_path=load_ui_path(env),
    )
