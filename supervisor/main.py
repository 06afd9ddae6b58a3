"""`ingest-supervisor`: build the daemon's parts from the settings and run it."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import pwd
import sys
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ingest_worker.config import ENV_VARS as WORKER_ENV_VARS
from ingest_worker.config import WorkerConfig
from ingest_worker.errors import ConfigError
from supervisor import stop_signals
from supervisor.daemon import Daemon
from supervisor.execution_context import ExecutionContext
from supervisor.extras import PSYCOPG, SENTENCE_TRANSFORMERS, require
from supervisor.hardening import child_user_problem, harden_process
from supervisor.logs import configure_logging
from supervisor.metrics import DaemonMetrics, MetricsSink
from supervisor.queue.connection import redis_client
from supervisor.queue.jobqueue import Backoff, JobQueue, Retention
from supervisor.queue.redaction import DEFAULT_SECRET_KEYS
from supervisor.redis_ready import RedisRefused
from supervisor.runner import FORK_SERVER, ResourceLimits, RunnerConfig, default_command
from supervisor.runner.spawn import resolve_program
from supervisor.runner.workdir import JobsRoot, remove_stale_jobs_roots
from supervisor.sdnotify import SystemdNotifier
from supervisor.settings import Settings, SettingsError, load_settings
from supervisor.sinks import JobSink, SinkFanout
from supervisor.status import build_status_backend
from supervisor.status.factory import check_settings_extras as check_status_extras
from supervisor.status.reporting import ProjectorHooks
from supervisor.status.service import StatusService

log = logging.getLogger("supervisor")


def check_extras(settings: Settings, env: Mapping[str, str]) -> None:
    """Raise MissingExtraError when a chosen status store, chunk store or embedder needs a
    package this interpreter lacks. The built-in worker's choices are checked only when it
    runs on this interpreter (another one may well have the package)."""
    check_status_extras(settings)
    builtin_worker_here = (
        settings.worker_command is None
        and settings.worker_path is None
        and os.path.abspath(settings.python_executable) == os.path.abspath(sys.executable)
    )
    if not builtin_worker_here:
        return
    try:
        worker = WorkerConfig(env)
    except ConfigError:
        return  # the worker rejects it on every job, with the variable's name
    if worker.store == "postgres":
        explicit = env.get("INGEST_CHUNK_STORE", "").strip().lower() == "postgres"
        require(
            "INGEST_CHUNK_STORE=postgres"
            if explicit
            else "INGEST_CHUNK_DSN (INGEST_CHUNK_STORE=auto picks postgres)",
            PSYCOPG,
        )
    if worker.embedder == "sentence-transformers":
        require("INGEST_EMBEDDER=sentence-transformers", SENTENCE_TRANSFORMERS)


def build_queue(settings: Settings, client: Redis | RedisCluster) -> JobQueue:
    return JobQueue(
        client,
        settings.queue,
        default_max_attempts=settings.max_attempts,
        secret_keys=settings.secret_keys,
        backoff=Backoff(settings.backoff_s, settings.backoff_factor, settings.backoff_cap_s),
        retention=Retention(
            keep_completed_s=settings.keep_completed_s,
            keep_failed_s=settings.keep_failed_s,
            stall_limit=settings.stall_limit,
            outbox_cap=settings.status_outbox_max,
        ),
    )


def build_runner_config(settings: Settings, jobs_root: str | None = None) -> RunnerConfig:
    """How this daemon's children start; `jobs_root`: where their directories go (None:
    the temporary directory itself)."""
    return RunnerConfig(
        command=default_command(
            settings.python_executable, settings.worker_path, settings.worker_command
        ),
        # Our worker's own settings always pass; the operator may name more.
        env_passthrough=(*WORKER_ENV_VARS, *settings.child_env),
        max_output_bytes=settings.max_output_bytes,
        max_line_bytes=settings.max_line_bytes,
        kill_grace_s=settings.kill_grace_s,
        limits=ResourceLimits(
            memory_bytes=settings.child_memory_bytes, cpu_seconds=settings.child_cpu_seconds
        ),
        user=settings.child_user,
        tmp_root=jobs_root,
    )


def build_sinks(settings: Settings) -> tuple[list[JobSink], DaemonMetrics]:
    """Metrics and tracing sinks, plus the daemon-level metrics object."""
    from supervisor.tracing import build_tracer

    sinks: list[JobSink] = [
        MetricsSink(settings.queue),
        build_tracer(
            public_key=settings.langfuse_public_key,
            secret_key=settings.langfuse_secret_key,
            host=settings.langfuse_host,
            extra_secret_keys=settings.secret_keys,
        ),
    ]
    return sinks, DaemonMetrics(settings.queue)


def build_status(
    settings: Settings, queue: JobQueue, metrics: DaemonMetrics, consumer: str
) -> StatusService:
    backend = build_status_backend(
        settings.status_backend,
        supabase_url=settings.supabase_url,
        supabase_key=settings.supabase_key,
        dsn=settings.status_dsn,
        sqlite_path=settings.status_sqlite_path,
    )
    hooks = ProjectorHooks(
        on_request=metrics.status_request,
        on_lag=metrics.status_projected,
        on_outbox=lambda state: metrics.status_outbox(
            state.length, state.unprojected, state.age_s()
        ),
        on_rejected=metrics.status_rows_rejected,
        on_parked=metrics.status_parked,
    )
    return StatusService(
        queue,
        backend,
        consumer=consumer,
        reconcile_interval_s=settings.status_reconcile_s,
        reconcile_page=settings.status_reconcile_page,
        claim_idle_s=settings.status_claim_idle_s,
        hooks=hooks,
    )


async def run(settings: Settings) -> int:
    try:
        jobs_root = JobsRoot.create()
    except OSError as exc:
        log.error("cannot create a directory for job directories: %s", exc)
        return 1
    try:
        return await _run(settings, jobs_root.path)
    finally:
        jobs_root.remove()  # after the fork server is closed: every job has been reaped


async def _run(settings: Settings, jobs_root: str) -> int:
    client = redis_client(
        settings.redis_url,
        cluster=settings.redis_cluster,
        sentinels=settings.redis_sentinels,
        sentinel_master=settings.redis_sentinel_master,
    )
    queue = build_queue(settings, client)
    sinks, metrics = build_sinks(settings)
    metrics.status_outbox_bound(settings.status_outbox_max)
    worker_id = settings.worker_id()
    status = build_status(settings, queue, metrics, worker_id)
    ctx = ExecutionContext(
        queue=queue,
        sinks=SinkFanout(sinks),
        runner=build_runner_config(settings, jobs_root),
        worker_id=worker_id,
        lease_s=settings.lease_s,
        job_timeout_s=settings.job_timeout_s,
        max_job_timeout_s=settings.max_job_timeout_s,
        kill_grace_s=settings.kill_grace_s,
        secret_keys=frozenset(k.lower() for k in (*DEFAULT_SECRET_KEYS, *settings.secret_keys)),
        metrics=metrics,
    )
    daemon = Daemon(
        ctx,
        concurrency=settings.concurrency,
        shutdown_grace_s=settings.shutdown_grace_s,
        heartbeat_ttl_s=settings.heartbeat_ttl_s,
        instance=settings.instance,
        metrics_port=settings.effective_metrics_port,
        notifier=SystemdNotifier.from_environ(),
        status=status,
    )
    stop_metrics = None
    try:
        if settings.effective_metrics_port:
            from supervisor.metrics import start_metrics_server

            where = f"{settings.metrics_host}:{settings.effective_metrics_port}"
            try:
                stop_metrics = start_metrics_server(
                    settings.effective_metrics_port, settings.metrics_host
                )
            except OSError as exc:  # taken by another process (two daemons on one instance)
                log.error("cannot serve metrics on %s: %s", where, exc.strerror or exc)
                return 2
            log.info("metrics on %s/metrics", where)
        # What daemons that ended uncleanly (SIGKILL, an unhandled signal) left behind.
        await remove_stale_jobs_roots(ctx.runner, stopping=lambda: bool(stop_signals.received()))
        return await daemon.run()
    except RedisRefused as exc:
        log.error("%s; check REDIS_URL and the Redis user's rights", exc)
        return 2
    finally:
        FORK_SERVER.close()  # the daemon has reaped every job by now
        if stop_metrics is not None:
            stop_metrics()
        await client.aclose()


def check_worker_command(settings: Settings) -> None:
    """A child program or script that does not exist would fail every job of the queue in
    turn: refuse to start instead. (A relative path names a file in each job's own new
    directory, so it cannot be checked here.)"""
    try:
        command = build_runner_config(settings).command
    except ValueError as exc:  # a command line shlex cannot split: an unclosed quotation
        raise SettingsError(f"INGEST_WORKER_COMMAND: {exc}") from None
    if not command:
        return
    # The script: a file, or a directory with a __main__.py.
    script = None if settings.worker_command else settings.worker_path
    if script and os.path.isabs(script) and not os.path.exists(script):
        raise SettingsError(f"INGEST_WORKER_PATH: {script} does not exist")
    program = command[0]
    if os.sep in program and not os.path.isabs(program):
        return
    try:
        resolve_program(program, os.environ, "/")
    except FileNotFoundError:
        name = "INGEST_WORKER_COMMAND" if settings.worker_command else "PYTHON_EXECUTABLE"
        raise SettingsError(f"{name}: {program} is not found or not executable") from None


def check_child_user(settings: Settings) -> None:
    """Children under another user must be within the daemon's reach: refuse to start
    otherwise (every timeout, cancel and stop would fail, and the children outlive the
    daemon). The user itself is looked up at each start, and a missing one fails it."""
    if settings.child_user is None:
        return
    try:
        uid = pwd.getpwnam(settings.child_user).pw_uid
    except KeyError:
        return
    if uid in (os.getuid(), os.geteuid()):
        return
    try:
        with open("/proc/self/status") as status, open("/proc/self/mountinfo") as mounts:
            problem = child_user_problem(
                status.read(),
                mounts.read(),
                euid=os.geteuid(),
                groups={os.getegid(), *os.getgroups()},
            )
    except OSError:  # not Linux: nothing to tell
        return
    if problem is not None:
        raise SettingsError(f"INGEST_CHILD_USER={settings.child_user}: {problem}")


def main(argv: Sequence[str] | None = None) -> int:
    # Before any secret is read: children must not be able to read this process's memory.
    harden_process()
    try:
        settings = load_settings(argv)
        check_extras(settings, os.environ)
        check_worker_command(settings)
        check_child_user(settings)
    except SettingsError as exc:
        print(f"ingest-supervisor: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if settings.check_config:
        print(json.dumps(settings.redacted(), indent=2, default=str))
        if importlib.util.find_spec("ingest_worker") is None and not settings.worker_command:
            print("warning: ingest_worker is not importable here", file=sys.stderr)
        return 0
    log.info("starting with %s", json.dumps(settings.redacted(), default=str))
    if os.geteuid() == 0 and settings.child_user is None:
        log.warning(
            "running as root without INGEST_CHILD_USER: every child runs as root, and can "
            "read this daemon's secrets (/proc/%d/environ) and every other job's files; "
            "run the daemon as its own user, or set INGEST_CHILD_USER (docs/security.md)",
            os.getpid(),
        )
    # Before any thread exists; the built-in worker is imported into it once, here.
    try:
        builtin = build_runner_config(settings).command is None
        # Commands are spawned at once by the server; only the built-in worker and a
        # switch of user need spares, one waiting for each slot.
        uses_spares = builtin or settings.child_user is not None
        FORK_SERVER.start(preload_worker=builtin, spares=settings.concurrency if uses_spares else 0)
    except OSError as exc:  # each job tries again, and fails to start with the reason
        log.error("%s", exc)
    return asyncio.run(run(settings))
