"""What every entry point shares, read once from the environment: the Redis connection
(single server, Cluster or Sentinel), the queue name, the secret payload keys, the default
attempts per job and the status store.

The daemon (`supervisor.settings`), the API (`api.settings`), `ingestctl` and the Python
client all start from `load_shared_config`, each adding only its own settings. A setting is
one dataclass field declared with `setting(...)`: its environment variable, default, help
and rule live there and nowhere else; its type annotation says how the text is parsed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from supervisor.queue.connection import AnyRedis, redis_client
from supervisor.queue.jobqueue import JobQueue, Retention
from supervisor.queue.keys import DEFAULT_QUEUE as DEFAULT_QUEUE
from supervisor.queue.keys import QUEUE_NAME_RE
from supervisor.secretfiles import SECRET_VARIABLES, SecretFileError, with_secret_files

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MAX_ATTEMPTS = 3
QUEUE_NAME_RULE = "a queue name must be 1-64 characters of letters, digits, '_.:-'"


class ConfigError(ValueError):
    """A setting has an invalid value; the message names the variable."""


def parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def parse_names(raw: str) -> tuple[str, ...]:
    """A comma- or space-separated list of names."""
    return tuple(n for n in re.split(r"[,\s]+", raw.strip()) if n)


def _optional_int(raw: str) -> int | None:
    return None if raw.strip() == "" else int(raw)


def _optional_str(raw: str) -> str | None:
    return raw or None


def parse_finite(raw: str) -> float:
    """A number of seconds, bytes or a ratio: never infinite or NaN (each becomes a
    deadline, a timer or a lease, which no infinity can be)."""
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(f"{raw!r} is not a finite number")
    return value


# How the text of a variable becomes the value its field's annotation names.
PARSERS: dict[Any, Callable[[str], Any]] = {
    str: str,
    int: int,
    float: parse_finite,
    bool: parse_bool,
    tuple[str, ...]: parse_names,
    int | None: _optional_int,
    str | None: _optional_str,
}
KIND_NAMES: dict[Any, str] = {
    int: "integer",
    int | None: "integer",
    float: "finite number",
    bool: "boolean",
}


# The userinfo of a URL's authority: everything up to its last @ (an @ in a user name or a
# password is read so by URL parsers and redis-py); the password follows its first colon.
_URL_USERINFO = re.compile(r"//([^/?#\s]*)@")
# password=... as a URL query parameter or a libpq keyword (value quoted or bare), and
# libpq's sslpassword=. After a letter or digit it is another word (`nopassword=`); after
# `_` it is one of a variable's words (`REDIS_PASSWORD=`, `ssl_password=`).
_PASSWORD_PARAM = re.compile(
    r"(?i)((?<![a-z0-9])(?:ssl)?(?:password|passwd|pwd)\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)"
)


def _masked_userinfo(m: re.Match[str]) -> str:
    user, colon, _password = m.group(1).partition(":")
    return f"//{user}:***@" if colon else m.group(0)


def mask_secrets(text: str) -> str:
    """`text` with the password of any connection string in it replaced by ***."""
    text = _URL_USERINFO.sub(_masked_userinfo, text)
    return _PASSWORD_PARAM.sub(r"\1***", text)


@dataclass(frozen=True)
class Setting:
    """One setting: where it is read from, what it means, which values are valid."""

    env: str
    help: str
    check: Callable[[Any], bool] | None = None
    rule: str = ""
    fallback_env: str | None = None  # read when `env` is unset


def setting(
    env: str,
    default: Any,
    help: str,
    check: Callable[[Any], bool] | None = None,
    rule: str = "",
    *,
    fallback_env: str | None = None,
) -> Any:
    """A dataclass field read from `env` (see `read_fields`)."""
    spec = Setting(env, help, check, rule, fallback_env)
    return dataclasses.field(default=default, metadata={"setting": spec})


@dataclass(frozen=True)
class Option:
    """A declared setting of a settings class, with the parser its type calls for."""

    field: str
    env: str
    kind: Callable[[str], Any]
    kind_name: str
    default: Any
    help: str
    check: Callable[[Any], bool] | None
    rule: str
    fallback_env: str | None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


def options_of(cls: type) -> tuple[Option, ...]:
    """Every field of the dataclass `cls` declared with `setting(...)`, in field order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        hint = hints[f.name]
        out.append(
            Option(
                f.name,
                spec.env,
                PARSERS[hint],
                KIND_NAMES.get(hint, "value"),
                f.default,
                spec.help,
                spec.check,
                spec.rule,
                spec.fallback_env,
            )
        )
    return tuple(out)


def read_fields(
    cls: type, env: Mapping[str, str], flags: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The value of every setting of `cls`: its flag (from `flags`, by field name), else its
    variable, else its fallback variable, else its default. Raises ConfigError naming the
    flag or variable of the first invalid value."""
    flags = flags or {}
    values: dict[str, Any] = {}
    for opt in options_of(cls):
        raw = flags.get(opt.field)
        source = opt.flag
        if raw is None:
            source = opt.env
            raw = env.get(opt.env)
            if raw is None and opt.fallback_env:
                raw = env.get(opt.fallback_env)
        if raw is None:
            values[opt.field] = opt.default
            continue
        # A secret's value (a URL with its password) is never echoed in an error.
        shown = source if opt.env in SECRET_VARIABLES else f"{source}={raw!r}"
        try:
            value = opt.kind(raw)
        except ValueError:
            raise ConfigError(f"{shown}: not a valid {opt.kind_name}") from None
        if value is not None and opt.check is not None and not opt.check(value):
            raise ConfigError(f"{shown}: {opt.rule}")
        values[opt.field] = value
    return values


def _queue_name(v: str) -> bool:
    return QUEUE_NAME_RE.fullmatch(v) is not None


STATUS_BACKENDS = ("auto", "supabase", "postgres", "sqlite", "none")
DEFAULT_STATUS_SQLITE_PATH = "var/ingest-status.sqlite3"


@dataclass(frozen=True)
class SharedConfig:
    """The settings every entry point reads the same way."""

    redis_url: str = setting(
        "REDIS_URL",
        DEFAULT_REDIS_URL,
        "Redis URL of the queue (falls back to RAG_REDIS_URL)",
        lambda v: v.startswith(("redis://", "rediss://", "unix://")),
        "must start with redis://, rediss:// or unix://",
        fallback_env="RAG_REDIS_URL",
    )
    redis_cluster: bool = setting(
        "INGEST_REDIS_CLUSTER",
        False,
        "REDIS_URL names a node of a Redis Cluster (keys of a queue share one hash slot)",
    )
    redis_sentinels: tuple[str, ...] = setting(
        "INGEST_REDIS_SENTINELS",
        (),
        "Sentinel host:port list; the master is found through them (REDIS_URL gives "
        "password and db)",
    )
    redis_sentinel_master: str | None = setting(
        "INGEST_REDIS_SENTINEL_MASTER", None, "name of the master the Sentinels watch"
    )
    queue: str = setting("INGEST_QUEUE", DEFAULT_QUEUE, "queue name", _queue_name, QUEUE_NAME_RULE)
    max_attempts: int = setting(
        "INGEST_MAX_ATTEMPTS",
        DEFAULT_MAX_ATTEMPTS,
        "default attempts per job (a job's max_attempts overrides)",
        lambda v: 1 <= v <= 100,
        "must be between 1 and 100",
    )
    secret_keys: tuple[str, ...] = setting(
        "INGEST_SECRET_KEYS",
        (),
        "extra payload keys whose values are secrets (trial_token is always one)",
    )
    status_backend: str = setting(
        "INGEST_STATUS_BACKEND",
        "auto",
        "status store: auto, supabase, postgres, sqlite or none",
        lambda v: v in STATUS_BACKENDS,
        "must be auto, supabase, postgres, sqlite or none",
    )
    supabase_url: str | None = setting("SUPABASE_URL", None, "Supabase project URL")
    supabase_key: str | None = setting(
        "SUPABASE_SERVICE_ROLE_KEY",
        None,
        "Supabase service-role key (never passed to children)",
    )
    status_dsn: str | None = setting(
        "INGEST_STATUS_DSN",
        None,
        "PostgreSQL connection string for the postgres status backend",
    )
    status_sqlite_path: str = setting(
        "INGEST_STATUS_SQLITE_PATH",
        DEFAULT_STATUS_SQLITE_PATH,
        "file of the sqlite status backend",
    )

    status_outbox_max: int = setting(
        "INGEST_STATUS_OUTBOX_MAX",
        200_000,
        "status outbox bound in entries: progress is no longer recorded at it, other "
        "non-final changes at twice it, final states always (0: unbounded)",
        lambda v: v >= 0,
        "must be >= 0",
    )

    def job_queue(self, client: AnyRedis) -> JobQueue:
        """The queue over `client` as a producer uses it: the shared attempts default and
        the status outbox bound (the same as the daemons', so every script bounds it alike)."""
        return JobQueue(
            client,
            self.queue,
            default_max_attempts=self.max_attempts,
            retention=Retention(outbox_cap=self.status_outbox_max),
            secret_keys=self.secret_keys,
        )

    def redis(self, **options: Any) -> AnyRedis:
        """A client for the queue's Redis, whichever the topology; `options` (timeouts,
        retry, pool size) as `supervisor.queue.connection.redis_client` takes them."""
        return redis_client(
            self.redis_url,
            cluster=self.redis_cluster,
            sentinels=self.redis_sentinels,
            sentinel_master=self.redis_sentinel_master,
            **options,
        )


def check_shared(values: Mapping[str, Any]) -> None:
    """Rules that tie shared settings together; raise ConfigError naming the variables."""
    if values["redis_sentinels"] and not values["redis_sentinel_master"]:
        raise ConfigError("INGEST_REDIS_SENTINELS: needs INGEST_REDIS_SENTINEL_MASTER")
    if values["redis_cluster"] and urlsplit(values["redis_url"]).path.strip("/") not in ("", "0"):
        raise ConfigError("REDIS_URL: a Redis Cluster has only database 0")
    if values["status_backend"] == "supabase" and not (
        values["supabase_url"] and values["supabase_key"]
    ):
        raise ConfigError(
            "INGEST_STATUS_BACKEND=supabase: needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
        )
    if values["status_backend"] == "postgres" and not values["status_dsn"]:
        raise ConfigError("INGEST_STATUS_BACKEND=postgres: needs INGEST_STATUS_DSN")


def load_shared_config(
    env: Mapping[str, str] | None = None, flags: Mapping[str, str] | None = None
) -> SharedConfig:
    """The shared settings from `env` (default: the process environment), `flags` on top."""
    try:
        env = with_secret_files(os.environ if env is None else env)
    except SecretFileError as exc:
        raise ConfigError(str(exc)) from None
    values = read_fields(SharedConfig, env, flags)
    check_shared(values)
    return SharedConfig(**values)
