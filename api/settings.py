"""The API's settings, read once from the environment into one frozen object: the shared
ones (`supervisor.config`: Redis, queue, secret keys, attempts, status store) and its own."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from supervisor.config import ConfigError, SharedConfig, load_shared_config, parse_bool
from supervisor.queue.payload import TENANT_ID_RE
from supervisor.secretfiles import SecretFileError, with_secret_files

# Raised for an invalid API setting; the same class as the shared settings' error.
ApiSettingsError = ConfigError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Redis connections for /events streams per API process (each open stream holds one); no
# one owner's limit may exceed half of them.
EVENTS_POOL_CONNECTIONS = 1024
MAX_STREAM_LIMIT = EVENTS_POOL_CONNECTIONS // 2


@dataclass(frozen=True)
class ApiSettings(SharedConfig):
    @property
    def auth_enabled(self) -> bool:
        return self.token is not None or bool(self.tenant_tokens)

    token: str | None = None
    # Tenant-scoped tokens: (tenant_id, token) pairs. Such a token sees and changes only its
    # tenant's jobs; `token` above sees everything.
    tenant_tokens: tuple[tuple[str, str], ...] = ()
    # Reads of job data (GET /jobs*, /events, /workers) need the token whenever one is set;
    # INGEST_API_AUTH_READS=0 opens them again for deployments that want that.
    auth_reads: bool = True
    # Host header values served (DNS rebinding); `*` serves any. Health is always served.
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    # INGEST_API_INSECURE=1: serve without a token on a non-loopback address (ingest-api
    # refuses to otherwise).
    insecure: bool = False
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
    # /events streams a tenant-scoped token may hold open at once (each holds a connection),
    # and all callers without a token together (reads opened by INGEST_API_AUTH_READS=0).
    max_streams_per_tenant: int = 16
    max_anonymous_streams: int = 128
    # Where the dashboard is served; None turns it off.
    ui_path: str | None = "/ui"


def _bool(name: str, raw: str) -> bool:
    try:
        return parse_bool(raw)
    except ValueError:
        raise ApiSettingsError(f"{name}={raw!r}: must be a boolean (1/0, true/false)") from None


def _num(
    env: Mapping[str, str],
    name: str,
    default: str,
    kind: type[int] | type[float],
    minimum: float,
    maximum: float | None = None,
) -> float:
    """`env[name]` (else `default`) as a number within the bounds."""
    raw = env.get(name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise ApiSettingsError(f"{name}={raw!r}: must be a number") from None
    if not math.isfinite(value):  # a deadline of NaN times out at once, one of inf never
        raise ApiSettingsError(f"{name}={raw!r}: must be a finite number")
    if value < minimum:
        raise ApiSettingsError(f"{name}={raw!r}: must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ApiSettingsError(f"{name}={raw!r}: must be <= {maximum}")
    return value


def _int(
    env: Mapping[str, str], name: str, default: str, minimum: int, maximum: int | None = None
) -> int:
    return int(_num(env, name, default, int, minimum, maximum))


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


# Shortest token the API takes (tenant tokens and INGEST_API_TOKEN alike).
MIN_TOKEN_CHARS = 16


def _admin_token(raw: str | None) -> str | None:
    if raw and len(raw) < MIN_TOKEN_CHARS:  # never quoted: it is the token
        raise ApiSettingsError(f"INGEST_API_TOKEN: shorter than {MIN_TOKEN_CHARS} characters")
    return raw or None


def _tenant_tokens(raw: str, admin: str | None) -> tuple[tuple[str, str], ...]:
    """`tenant:token` pairs separated by commas or whitespace."""
    name = "INGEST_API_TENANT_TOKENS"
    pairs: list[tuple[str, str]] = []
    items = [item for item in re.split(r"[,\s]+", raw.strip()) if item]
    for number, item in enumerate(items, 1):
        tenant, sep, token = item.rpartition(":")
        # Never quote an entry, nor what looks like its tenant: an entry written token
        # first, or a token holding ':', puts (part of) the token there.
        if not sep or not TENANT_ID_RE.fullmatch(tenant):
            raise ApiSettingsError(f"{name}: each entry must be tenant_id:token")
        if len(token) < MIN_TOKEN_CHARS:
            raise ApiSettingsError(
                f"{name}: entry {number} (tenant_id:token) has a token shorter than "
                f"{MIN_TOKEN_CHARS} characters"
            )
        pairs.append((tenant, token))
    tokens = [t for _, t in pairs]
    if len(set(tokens)) != len(tokens) or (admin is not None and admin in tokens):
        raise ApiSettingsError(f"{name}: every token must be distinct (and not INGEST_API_TOKEN)")
    return tuple(pairs)


def _hosts(raw: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in re.split(r"[,\s]+", raw) if n.strip())
    for name in names:
        if name != "*" and not re.fullmatch(r"(\*\.)?[a-z0-9._:\[\]-]{1,253}", name):
            raise ApiSettingsError(
                f"INGEST_API_ALLOWED_HOSTS: {name!r} is not a host name, address, '*' or '*.domain'"
            )
    return tuple(n.strip("[]") for n in names) or LOOPBACK_HOSTS


def load_api_settings(env: Mapping[str, str] | None = None) -> ApiSettings:
    try:
        env = with_secret_files(os.environ if env is None else env)
    except SecretFileError as exc:
        raise ApiSettingsError(str(exc)) from None
    shared = load_shared_config(env)
    return ApiSettings(
        **asdict(shared),
        token=_admin_token(env.get("INGEST_API_TOKEN")),
        tenant_tokens=_tenant_tokens(
            env.get("INGEST_API_TENANT_TOKENS", ""), env.get("INGEST_API_TOKEN") or None
        ),
        auth_reads=_bool("INGEST_API_AUTH_READS", env.get("INGEST_API_AUTH_READS", "1")),
        allowed_hosts=_hosts(env.get("INGEST_API_ALLOWED_HOSTS", "")),
        insecure=_bool("INGEST_API_INSECURE", env.get("INGEST_API_INSECURE", "0")),
        max_backlog=_int(env, "INGEST_HEALTH_MAX_BACKLOG", "1000", 0),
        max_wait_s=_num(env, "INGEST_HEALTH_MAX_WAIT_SECONDS", "600", float, 0),
        health_timeout_s=_num(env, "INGEST_HEALTH_TIMEOUT_SECONDS", "0.5", float, 0.05),
        max_batch_jobs=_int(env, "INGEST_API_MAX_BATCH_JOBS", "1000", 1),
        max_streams_per_tenant=_int(
            env, "INGEST_API_MAX_STREAMS_PER_TENANT", "16", 1, MAX_STREAM_LIMIT
        ),
        max_anonymous_streams=_int(
            env, "INGEST_API_MAX_ANONYMOUS_STREAMS", "128", 1, MAX_STREAM_LIMIT
        ),
        ui_path=load_ui_path(env),
    )
