"""One frozen settings object, built from environment variables with command-line flags on top.

Every setting is declared once in OPTIONS: its environment variable, flag, type, default and
help. `--help` is generated from that table, so it always documents every setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.secretfiles import SecretFileError, with_secret_files

# A hostile input (a PDF, a page) must not take the host down with it: by default a child
# may map 2 GiB and burn 10 CPU-minutes (twice the default job timeout of wall time).
DEFAULT_CHILD_MEMORY_BYTES = 2 * 1024**3
DEFAULT_CHILD_CPU_SECONDS = 600


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the variable."""


@dataclass(frozen=True)
class Option:
    field: str
    env: str
    kind: Callable[[str], Any]
    default: Any
    help: str
    check: Callable[[Any], bool] = lambda _v: True
    rule: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _names(raw: str) -> tuple[str, ...]:
    return tuple(n for n in re.split(r"[,\s]+", raw.strip()) if n)


def _optional_int(raw: str) -> int | None:
    return None if raw.strip() == "" else int(raw)


def _optional_str(raw: str) -> str | None:
    return raw or None


OPTIONS: tuple[Option, ...] = (
    Option(
        "redis_url",
        "REDIS_URL",
        str,
        "redis://127.0.0.1:6379/0",
        "Redis URL of the queue (falls back to RAG_REDIS_URL)",
        lambda v: v.startswith(("redis://", "rediss://", "unix://")),
        "must start with redis://, rediss:// or unix://",
    ),
    Option(
        "redis_cluster",
        "INGEST_REDIS_CLUSTER",
        _bool,
        False,
        "REDIS_URL names a node of a Redis Cluster (keys of a queue share one hash slot)",
    ),
    Option(
        "redis_sentinels",
        "INGEST_REDIS_SENTINELS",
        _names,
        (),
        "Sentinel host:port list; the master is found through them (REDIS_URL gives "
        "password and db)",
    ),
    Option(
        "redis_sentinel_master",
        "INGEST_REDIS_SENTINEL_MASTER",
        _optional_str,
        None,
        "name of the master the Sentinels watch",
    ),
    Option(
        "queue",
        "INGEST_QUEUE",
        str,
        "ingest",
        "queue name",
        lambda v: re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", v) is not None,
        "must be 1-64 characters of letters, digits, '_.:-'",
    ),
    Option(
        "concurrency",
        "INGEST_CONCURRENCY",
        int,
        2,
        "job slots (children at once)",
        lambda v: 1 <= v <= 256,
        "must be between 1 and 256",
    ),
    Option(
        "job_timeout_s",
        "INGEST_JOB_TIMEOUT",
        float,
        300.0,
        "default job timeout in seconds",
        _positive,
        "must be > 0",
    ),
    Option(
        "max_job_timeout_s",
        "INGEST_MAX_JOB_TIMEOUT",
        float,
        21600.0,
        "upper limit on a job's own timeout_s",
        _positive,
        "must be > 0",
    ),
    Option(
        "lease_s",
        "INGEST_LEASE_SECONDS",
        float,
        300.0,
        "lease length in seconds; renewed every third of it",
        lambda v: v >= 0.3,
        "must be >= 0.3",
    ),
    Option(
        "kill_grace_s",
        "INGEST_KILL_GRACE_SECONDS",
        float,
        10.0,
        "seconds between SIGTERM and SIGKILL of a child's process group",
        _non_negative,
        "must be >= 0",
    ),
    Option(
        "shutdown_grace_s",
        "INGEST_SHUTDOWN_GRACE_SECONDS",
        float,
        30.0,
        "seconds running jobs get to finish after SIGTERM before they are stopped",
        _non_negative,
        "must be >= 0",
    ),
    Option(
        "max_attempts",
        "INGEST_MAX_ATTEMPTS",
        int,
        3,
        "default attempts per job (a job's max_attempts overrides)",
        lambda v: 1 <= v <= 100,
        "must be between 1 and 100",
    ),
    Option(
        "backoff_s",
        "INGEST_BACKOFF_SECONDS",
        float,
        5.0,
        "first retry delay; doubles each attempt",
        _non_negative,
        "must be >= 0",
    ),
    Option(
        "backoff_factor",
        "INGEST_BACKOFF_FACTOR",
        float,
        2.0,
        "retry delay growth factor",
        lambda v: v >= 1,
        "must be >= 1",
    ),
    Option(
        "backoff_cap_s",
        "INGEST_BACKOFF_CAP_SECONDS",
        float,
        3600.0,
        "longest retry delay",
        _non_negative,
        "must be >= 0",
    ),
    Option(
        "stall_limit",
        "INGEST_STALL_LIMIT",
        int,
        2,
        "times a job may be recovered from a dead supervisor before it is failed",
        _non_negative,
        "must be >= 0",
    ),
    Option(
        "keep_completed_s",
        "INGEST_KEEP_COMPLETED_SECONDS",
        float,
        3600.0,
        "how long completed jobs stay in Redis",
        _non_negative,
        "must be >= 0",
    ),
    Option(
        "keep_failed_s",
        "INGEST_KEEP_FAILED_SECONDS",
        float,
        86400.0,
        "how long failed and cancelled jobs stay in Redis",
        _non_negative,
        "must be >= 0",
    ),
    Option(
        "max_output_bytes",
        "INGEST_MAX_OUTPUT_BYTES",
        int,
        1048576,
        "bytes of stderr tail kept per child (stdout is read for protocol lines only)",
        lambda v: v >= 1024,
        "must be >= 1024",
    ),
    Option(
        "max_line_bytes",
        "INGEST_MAX_LINE_BYTES",
        int,
        65536,
        "longest child output line parsed; longer lines are cut",
        lambda v: v >= 256,
        "must be >= 256",
    ),
    Option(
        "python_executable",
        "PYTHON_EXECUTABLE",
        str,
        sys.executable,
        "interpreter that runs the ingest worker",
    ),
    Option(
        "worker_path",
        "INGEST_WORKER_PATH",
        _optional_str,
        None,
        "script run as the child instead of `-m ingest_worker`",
    ),
    Option(
        "worker_command",
        "INGEST_WORKER_COMMAND",
        _optional_str,
        None,
        "full child command line (shell-style, split with shlex); replaces the above",
    ),
    Option(
        "child_env",
        "INGEST_CHILD_ENV",
        _names,
        (),
        "extra environment variable names passed through to children",
    ),
    Option(
        "child_memory_bytes",
        "INGEST_CHILD_MEMORY_BYTES",
        _optional_int,
        DEFAULT_CHILD_MEMORY_BYTES,
        "address-space limit per child (RLIMIT_AS); empty for none",
    ),
    Option(
        "child_cpu_seconds",
        "INGEST_CHILD_CPU_SECONDS",
        _optional_int,
        DEFAULT_CHILD_CPU_SECONDS,
        "CPU-seconds limit per child (RLIMIT_CPU); empty for none",
    ),
    Option(
        "child_user",
        "INGEST_CHILD_USER",
        _optional_str,
        None,
        "user to run children as (the daemon must be root to switch)",
    ),
    Option(
        "instance",
        "INGEST_INSTANCE",
        _optional_int,
        None,
        "instance number in a pool (else from supervisord's process name or the systemd "
        "unit instance)",
    ),
    Option(
        "metrics_port",
        "INGEST_METRICS_PORT",
        int,
        9464,
        "base port of /metrics; the instance number is added; 0 disables",
        lambda v: 0 <= v <= 65535,
        "must be between 0 and 65535",
    ),
    Option(
        "metrics_host",
        "INGEST_METRICS_HOST",
        str,
        "127.0.0.1",
        "address /metrics binds (0.0.0.0 for a Prometheus on another host)",
    ),
    Option(
        "heartbeat_ttl_s",
        "INGEST_HEARTBEAT_TTL",
        float,
        15.0,
        "seconds a heartbeat stays valid; refreshed every third of it",
        lambda v: v >= 0.3,
        "must be >= 0.3",
    ),
    Option(
        "log_format",
        "INGEST_LOG_FORMAT",
        str,
        "text",
        "text or json",
        lambda v: v in ("text", "json"),
        "must be 'text' or 'json'",
    ),
    Option(
        "log_level",
        "INGEST_LOG_LEVEL",
        str,
        "INFO",
        "DEBUG, INFO, WARNING or ERROR",
        lambda v: v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
        "must be DEBUG, INFO, WARNING or ERROR",
    ),
    Option(
        "status_backend",
        "INGEST_STATUS_BACKEND",
        str,
        "auto",
        "status store: auto, supabase, postgres, sqlite or none",
        lambda v: v in ("auto", "supabase", "postgres", "sqlite", "none"),
        "must be auto, supabase, postgres, sqlite or none",
    ),
    Option("supabase_url", "SUPABASE_URL", _optional_str, None, "Supabase project URL"),
    Option(
        "supabase_key",
        "SUPABASE_SERVICE_ROLE_KEY",
        _optional_str,
        None,
        "Supabase service-role key (never passed to children)",
    ),
    Option(
        "status_dsn",
        "INGEST_STATUS_DSN",
        _optional_str,
        None,
        "PostgreSQL connection string for the postgres status backend",
    ),
    Option(
        "status_sqlite_path",
        "INGEST_STATUS_SQLITE_PATH",
        str,
        "var/ingest-status.sqlite3",
        "file of the sqlite status backend",
    ),
    Option(
        "status_outbox_max",
        "INGEST_STATUS_OUTBOX_MAX",
        int,
        200_000,
        "status outbox bound in entries: progress is no longer recorded at it, other "
        "non-final changes at twice it, final states always (0: unbounded)",
        _non_negative,
        "must be >= 0",
    ),
    Option(
        "status_reconcile_s",
        "INGEST_STATUS_RECONCILE_SECONDS",
        float,
        30.0,
        "how often one daemon of the fleet compares a page of job records with their rows",
        _positive,
        "must be > 0",
    ),
    Option(
        "status_reconcile_page",
        "INGEST_STATUS_RECONCILE_PAGE",
        int,
        1000,
        "job records compared per reconcile sweep",
        _positive,
        "must be > 0",
    ),
    Option(
        "status_claim_idle_s",
        "INGEST_STATUS_CLAIM_IDLE_SECONDS",
        float,
        15.0,
        "status outbox entries another projector held unacknowledged this long are taken over",
        _positive,
        "must be > 0",
    ),
    Option(
        "langfuse_public_key",
        "LANGFUSE_PUBLIC_KEY",
        _optional_str,
        None,
        "Langfuse public key; tracing is off without keys",
    ),
    Option(
        "langfuse_secret_key", "LANGFUSE_SECRET_KEY", _optional_str, None, "Langfuse secret key"
    ),
    Option("langfuse_host", "LANGFUSE_HOST", _optional_str, None, "Langfuse base URL"),
    Option(
        "secret_keys",
        "INGEST_SECRET_KEYS",
        _names,
        (),
        "extra payload keys whose values are secrets (trial_token is always one)",
    ),
)


@dataclass(frozen=True)
class Settings:
    redis_url: str
    redis_cluster: bool
    redis_sentinels: tuple[str, ...]
    redis_sentinel_master: str | None
    queue: str
    concurrency: int
    job_timeout_s: float
    max_job_timeout_s: float
    lease_s: float
    kill_grace_s: float
    shutdown_grace_s: float
    max_attempts: int
    backoff_s: float
    backoff_factor: float
    backoff_cap_s: float
    stall_limit: int
    keep_completed_s: float
    keep_failed_s: float
    max_output_bytes: int
    max_line_bytes: int
    python_executable: str
    worker_path: str | None
    worker_command: str | None
    child_env: tuple[str, ...]
    child_memory_bytes: int | None
    child_cpu_seconds: int | None
    child_user: str | None
    instance: int | None
    metrics_port: int
    metrics_host: str
    heartbeat_ttl_s: float
    log_format: str
    log_level: str
    status_backend: str
    supabase_url: str | None
    supabase_key: str | None
    status_dsn: str | None
    status_sqlite_path: str
    status_outbox_max: int
    status_reconcile_s: float
    status_reconcile_page: int
    status_claim_idle_s: float
    langfuse_public_key: str | None
    langfuse_secret_key: str | None
    langfuse_host: str | None
    secret_keys: tuple[str, ...]
    check_config: bool = False

    @property
    def effective_metrics_port(self) -> int:
        if self.metrics_port == 0:
            return 0
        return self.metrics_port + (self.instance or 0)

    def worker_id(self, pid: int | None = None) -> str:
        """`host:pid`, or `host:iN:pid` for instance N of a pool."""
        host = socket.gethostname()
        pid = os.getpid() if pid is None else pid
        return f"{host}:{pid}" if self.instance is None else f"{host}:i{self.instance}:{pid}"

    def redacted(self) -> dict[str, Any]:
        """For logs: every setting, with secrets masked (keys, and passwords in every
        connection string form: URL user info, `?password=`, libpq `password=...`)."""
        out = dataclasses.asdict(self)
        for name in ("supabase_key", "langfuse_secret_key"):
            if out.get(name):
                out[name] = "***"
        for name, value in out.items():
            if isinstance(value, str):
                out[name] = mask_secrets(value)
            elif isinstance(value, list | tuple):
                out[name] = [mask_secrets(v) if isinstance(v, str) else v for v in value]
        return out


# user:password@ in a URL's authority (the user part is kept).
_URL_USERINFO = re.compile(r"(//[^/@:?#\s]*):[^@/?#\s]*@")
# password=... as a URL query parameter or a libpq keyword (value quoted or bare).
_PASSWORD_PARAM = re.compile(
    r"(?i)(\b(?:password|passwd|pwd)\s*=\s*)('(?:[^'\\]|\\.)*'|[^&\s]*)"
)


def mask_secrets(text: str) -> str:
    """`text` with the password of any connection string in it replaced by ***."""
    text = _URL_USERINFO.sub(r"\1:***@", text)
    return _PASSWORD_PARAM.sub(r"\1***", text)


def detect_instance(env: Mapping[str, str]) -> int | None:
    """The pool instance from supervisord's process name or the systemd unit's instance."""
    name = env.get("SUPERVISOR_PROCESS_NAME", "")
    m = re.search(r"_(\d+)$", name)
    if m:
        return int(m.group(1))
    try:
        cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    m = re.search(r"@(\d+)\.service", cgroup)
    return int(m.group(1)) if m else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingest-supervisor",
        description="Run ingestion jobs from a Redis queue in isolated child processes. "
        "Every setting comes from its environment variable; a flag overrides it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for opt in OPTIONS:
        shown = "" if opt.default is None else opt.default
        if isinstance(shown, tuple):
            shown = ",".join(shown)
        parser.add_argument(
            opt.flag,
            dest=opt.field,
            metavar=opt.env,
            default=None,
            help=f"{opt.help} [env {opt.env}, default: {shown!s}]",
        )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the settings, print them, exit"
    )
    return parser


def load_settings(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Parse flags over environment variables; raise SettingsError naming the bad variable."""
    try:
        env = with_secret_files(os.environ if env is None else env)
    except SecretFileError as exc:
        raise SettingsError(str(exc)) from None
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        flag_value = getattr(args, opt.field)
        raw = flag_value if flag_value is not None else env.get(opt.env)
        if raw is None and opt.env == "REDIS_URL":
            raw = env.get("RAG_REDIS_URL")
        source = opt.flag if flag_value is not None else opt.env
        if raw is None:
            values[opt.field] = opt.default
            continue
        try:
            value = opt.kind(raw)
        except ValueError:
            raise SettingsError(f"{source}={raw!r}: not a valid {_kind_name(opt.kind)}") from None
        if value is not None and not opt.check(value):
            raise SettingsError(f"{source}={raw!r}: {opt.rule}")
        values[opt.field] = value
    if values["instance"] is None:
        values["instance"] = detect_instance(env)
    if values["job_timeout_s"] > values["max_job_timeout_s"]:
        raise SettingsError("INGEST_JOB_TIMEOUT: must not exceed INGEST_MAX_JOB_TIMEOUT")
    if values["status_backend"] == "supabase" and not (
        values["supabase_url"] and values["supabase_key"]
    ):
        raise SettingsError(
            "INGEST_STATUS_BACKEND=supabase: needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
        )
    if values["redis_sentinels"] and not values["redis_sentinel_master"]:
        raise SettingsError("INGEST_REDIS_SENTINELS: needs INGEST_REDIS_SENTINEL_MASTER")
    if values["status_backend"] == "postgres" and not values["status_dsn"]:
        raise SettingsError("INGEST_STATUS_BACKEND=postgres: needs INGEST_STATUS_DSN")
    values["log_level"] = values["log_level"].upper()
    return Settings(**values, check_config=bool(args.check_config))


def _kind_name(kind: Callable[[str], Any]) -> str:
    return {
        int: "integer",
        float: "number",
        _bool: "boolean",
        _optional_int: "integer",
    }.get(kind, "value")
