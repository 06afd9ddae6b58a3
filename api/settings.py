"""The API's settings, read once from the environment into one frozen object."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.queue.keys import QUEUE_NAME_RE


class ApiSettingsError(ValueError):
    """An API setting has an invalid value; the message names the variable."""


@dataclass(frozen=True)
class ApiSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    queue: str = "ingest"
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
    secret_keys: tuple[str, ...] = ()
    default_max_attempts: int = 3
    # Where the dashboard is served; None turns it off.
    ui_path: str | None = "/ui"


def _bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ApiSettingsError(f"{name}={raw!r}: must be a boolean (1/0, true/false)")


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
    redis_url = env.get("REDIS_URL") or env.get("RAG_REDIS_URL") or ApiSettings.redis_url
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ApiSettingsError("REDIS_URL: must start with redis://, rediss:// or unix://")
    queue = env.get("INGEST_QUEUE") or ApiSettings.queue
    if not QUEUE_NAME_RE.fullmatch(queue):
        raise ApiSettingsError(f"INGEST_QUEUE={queue!r}: must be 1-64 of letters, digits, '_.:-'")
    return ApiSettings(
        redis_url=redis_url,
        queue=queue,
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
        secret_keys=tuple(
            n for n in re.split(r"[,\s]+", env.get("INGEST_SECRET_KEYS", "").strip()) if n
        ),
        default_max_attempts=int(
            _num("INGEST_MAX_ATTEMPTS", env.get("INGEST_MAX_ATTEMPTS", "3"), int, 1)
        ),
        ui_path=load_ui_path(env),
    )
