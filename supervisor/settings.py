"""The daemon's one frozen settings object, built from environment variables with
command-line flags on top.

Every setting is one field of `Settings` (the shared ones come from
`supervisor.config.SharedConfig`): its environment variable, default, help and rule are
declared there once. `--help` is generated from those fields, so it documents every setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.config import (
    ConfigError,
    SharedConfig,
    check_shared,
    mask_secrets,
    options_of,
    read_fields,
    setting,
)
from supervisor.secretfiles import SecretFileError, with_secret_files

# A hostile input (a PDF, a page) must not take the host down with it: by default a child
# may map 2 GiB and burn 10 CPU-minutes (twice the default job timeout of wall time).
DEFAULT_CHILD_MEMORY_BYTES = 2 * 1024**3
DEFAULT_CHILD_CPU_SECONDS = 600

# Raised for an invalid daemon setting; the same class as the shared settings' error.
SettingsError = ConfigError


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


@dataclass(frozen=True)
class Settings(SharedConfig):
    """The daemon's settings: the shared ones (`supervisor.config`) and its own below."""

    concurrency: int = setting(
        "INGEST_CONCURRENCY",
        2,
        "job slots (children at once)",
        lambda v: 1 <= v <= 256,
        "must be between 1 and 256",
    )
    job_timeout_s: float = setting(
        "INGEST_JOB_TIMEOUT",
        300.0,
        "default job timeout in seconds",
        _positive,
        "must be > 0",
    )
    max_job_timeout_s: float = setting(
        "INGEST_MAX_JOB_TIMEOUT",
        21600.0,
        "upper limit on a job's own timeout_s",
        _positive,
        "must be > 0",
    )
    lease_s: float = setting(
        "INGEST_LEASE_SECONDS",
        300.0,
        "lease length in seconds; renewed every third of it",
        lambda v: v >= 0.3,
        "must be >= 0.3",
    )
    kill_grace_s: float = setting(
        "INGEST_KILL_GRACE_SECONDS",
        10.0,
        "seconds between SIGTERM and SIGKILL of a child's process group (less than a third "
        "of the lease)",
        _non_negative,
        "must be >= 0",
    )
    shutdown_grace_s: float = setting(
        "INGEST_SHUTDOWN_GRACE_SECONDS",
        30.0,
        "seconds running jobs get to finish after SIGTERM before they are stopped",
        _non_negative,
        "must be >= 0",
    )
    backoff_s: float = setting(
        "INGEST_BACKOFF_SECONDS",
        5.0,
        "first retry delay; grows by INGEST_BACKOFF_FACTOR each attempt, less up to a fifth",
        _non_negative,
        "must be >= 0",
    )
    backoff_factor: float = setting(
        "INGEST_BACKOFF_FACTOR",
        2.0,
        "retry delay growth factor",
        lambda v: v >= 1,
        "must be >= 1",
    )
    backoff_cap_s: float = setting(
        "INGEST_BACKOFF_CAP_SECONDS",
        3600.0,
        "longest retry delay",
        _non_negative,
        "must be >= 0",
    )
    stall_limit: int = setting(
        "INGEST_STALL_LIMIT",
        2,
        "times a job may be recovered from a dead supervisor before it is failed",
        _non_negative,
        "must be >= 0",
    )
    keep_completed_s: float = setting(
        "INGEST_KEEP_COMPLETED_SECONDS",
        3600.0,
        "how long completed jobs stay in Redis",
        _non_negative,
        "must be >= 0",
    )
    keep_failed_s: float = setting(
        "INGEST_KEEP_FAILED_SECONDS",
        86400.0,
        "how long failed and cancelled jobs stay in Redis",
        _non_negative,
        "must be >= 0",
    )
    max_output_bytes: int = setting(
        "INGEST_MAX_OUTPUT_BYTES",
        1048576,
        "bytes of stderr tail kept per child (stdout is read for protocol lines only)",
        lambda v: v >= 1024,
        "must be >= 1024",
    )
    max_line_bytes: int = setting(
        "INGEST_MAX_LINE_BYTES",
        65536,
        "longest child output line parsed; longer lines are cut",
        lambda v: v >= 256,
        "must be >= 256",
    )
    python_executable: str = setting(
        "PYTHON_EXECUTABLE",
        sys.executable,
        "interpreter that runs the ingest worker",
    )
    worker_path: str | None = setting(
        "INGEST_WORKER_PATH",
        None,
        "script run as the child instead of `-m ingest_worker`",
    )
    worker_command: str | None = setting(
        "INGEST_WORKER_COMMAND",
        None,
        "full child command line (shell-style, split with shlex); replaces the above",
    )
    child_env: tuple[str, ...] = setting(
        "INGEST_CHILD_ENV",
        (),
        "extra environment variable names passed through to children",
    )
    child_memory_bytes: int | None = setting(
        "INGEST_CHILD_MEMORY_BYTES",
        DEFAULT_CHILD_MEMORY_BYTES,
        "address-space limit per child (RLIMIT_AS); empty for none",
    )
    child_cpu_seconds: int | None = setting(
        "INGEST_CHILD_CPU_SECONDS",
        DEFAULT_CHILD_CPU_SECONDS,
        "CPU-seconds limit per child (RLIMIT_CPU); empty for none",
    )
    child_user: str | None = setting(
        "INGEST_CHILD_USER",
        None,
        "user to run children as (the daemon must be root to switch)",
    )
    instance: int | None = setting(
        "INGEST_INSTANCE",
        None,
        "instance number in a pool (else from supervisord's process name or the systemd "
        "unit instance)",
    )
    metrics_port: int = setting(
        "INGEST_METRICS_PORT",
        9464,
        "base port of /metrics; the instance number is added; 0 disables",
        lambda v: 0 <= v <= 65535,
        "must be between 0 and 65535",
    )
    metrics_host: str = setting(
        "INGEST_METRICS_HOST",
        "127.0.0.1",
        "address /metrics binds (0.0.0.0 for a Prometheus on another host)",
    )
    heartbeat_ttl_s: float = setting(
        "INGEST_HEARTBEAT_TTL",
        15.0,
        "seconds a heartbeat stays valid; refreshed every third of it",
        lambda v: v >= 0.3,
        "must be >= 0.3",
    )
    log_format: str = setting(
        "INGEST_LOG_FORMAT",
        "text",
        "text or json",
        lambda v: v in ("text", "json"),
        "must be 'text' or 'json'",
    )
    log_level: str = setting(
        "INGEST_LOG_LEVEL",
        "INFO",
        "DEBUG, INFO, WARNING or ERROR",
        lambda v: v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
        "must be DEBUG, INFO, WARNING or ERROR",
    )
    status_reconcile_s: float = setting(
        "INGEST_STATUS_RECONCILE_SECONDS",
        30.0,
        "how often one daemon of the fleet compares a page of job records with their rows",
        _positive,
        "must be > 0",
    )
    status_reconcile_page: int = setting(
        "INGEST_STATUS_RECONCILE_PAGE",
        1000,
        "job records compared per reconcile sweep",
        _positive,
        "must be > 0",
    )
    status_claim_idle_s: float = setting(
        "INGEST_STATUS_CLAIM_IDLE_SECONDS",
        15.0,
        "status outbox entries another projector held unacknowledged this long are taken over",
        _positive,
        "must be > 0",
    )
    langfuse_public_key: str | None = setting(
        "LANGFUSE_PUBLIC_KEY",
        None,
        "Langfuse public key; tracing is off without keys",
    )
    langfuse_secret_key: str | None = setting("LANGFUSE_SECRET_KEY", None, "Langfuse secret key")
    langfuse_host: str | None = setting("LANGFUSE_HOST", None, "Langfuse base URL")
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


# Every setting of the daemon, in declaration order (shared ones first).
OPTIONS = options_of(Settings)


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
    flags = {o.field: getattr(args, o.field) for o in OPTIONS if getattr(args, o.field) is not None}
    values = read_fields(Settings, env, flags)
    check_shared(values)
    if values["instance"] is None:
        values["instance"] = detect_instance(env)
    if values["job_timeout_s"] > values["max_job_timeout_s"]:
        raise SettingsError("INGEST_JOB_TIMEOUT: must not exceed INGEST_MAX_JOB_TIMEOUT")
    # A child whose lease can no longer be renewed is stopped a third of a lease before it
    # runs out, at the latest: its kill grace must end before then, or the job could run on
    # another daemon while this child still runs.
    if values["kill_grace_s"] >= values["lease_s"] / 3:
        raise SettingsError(
            "INGEST_KILL_GRACE_SECONDS: must be less than a third of INGEST_LEASE_SECONDS"
        )
    values["log_level"] = values["log_level"].upper()
    return Settings(**values, check_config=bool(args.check_config))
