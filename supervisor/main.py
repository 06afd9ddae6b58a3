"""`ingest-supervisor`: build the daemon's parts from the settings and run it."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import sys
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from ingest_worker.config import ENV_VARS as WORKER_ENV_VARS
from supervisor.connection import redis_client
from supervisor.daemon import Daemon
from supervisor.execution import ExecutionContext
from supervisor.logs import configure_logging
from supervisor.payload import DEFAULT_SECRET_KEYS
from supervisor.protocol import Backoff, JobQueue, Retention
from supervisor.runner import FORK_SERVER, ResourceLimits, RunnerConfig, default_command
from supervisor.sdnotify import SystemdNotifier
from supervisor.settings import Settings, SettingsError, load_settings
from supervisor.sinks import JobSink, SinkFanout

log = logging.getLogger("supervisor")


def build_queue(settings: Settings, client: Redis | RedisCluster) -> JobQueue:
    return JobQueue(
        client,
        settings.queue,
        default_max_attempts=settings.max_attempts,
        backoff=Backoff(settings.backoff_s, settings.backoff_factor, settings.backoff_cap_s),
        retention=Retention(
            keep_completed_s=settings.keep_completed_s,
            keep_failed_s=settings.keep_failed_s,
            stall_limit=settings.stall_limit,
        ),
    )


def build_runner_config(settings: Settings) -> RunnerConfig:
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
    )


def build_sinks(settings: Settings) -> tuple[list[JobSink], object | None]:
    """Status writer, metrics and tracing sinks, plus the daemon-level metrics object."""
    from supervisor.metrics import DaemonMetrics, MetricsSink
    from supervisor.status import NoneBackend, StatusSink, StatusWriter, build_status_backend
    from supervisor.tracing import build_tracer

    backend = build_status_backend(
        settings.status_backend,
        supabase_url=settings.supabase_url,
        supabase_key=settings.supabase_key,
        dsn=settings.status_dsn,
        sqlite_path=settings.status_sqlite_path,
    )
    sinks: list[JobSink] = [
        MetricsSink(settings.queue),
        build_tracer(
            public_key=settings.langfuse_public_key,
            secret_key=settings.langfuse_secret_key,
            host=settings.langfuse_host,
            extra_secret_keys=settings.secret_keys,
        ),
    ]
    if isinstance(backend, NoneBackend):
        # No store: no writer at all (it would cost ~1 ms of CPU per job for nothing).
        # The writer series stay, at zero, so dashboards and alerts see the same names.
        return sinks, DaemonMetrics(
            settings.queue, status_backlog=lambda: 0, status_failures=lambda: 0
        )
    # The writer keeps its failure count in `stats`, and reports batch latency only through
    # `on_batch`: wire both explicitly so /metrics shows failures, backlog and latency.
    metrics = DaemonMetrics(
        settings.queue,
        status_backlog=lambda: writer.backlog,
        status_failures=lambda: writer.stats.failures,
    )
    writer = StatusWriter(
        backend, on_batch=lambda _n, seconds, _ok: metrics.status_write_observed(seconds)
    )
    sinks.insert(0, StatusSink(writer))
    return sinks, metrics


async def run(settings: Settings) -> int:
    client = redis_client(
        settings.redis_url,
        cluster=settings.redis_cluster,
        sentinels=settings.redis_sentinels,
        sentinel_master=settings.redis_sentinel_master,
    )
    queue = build_queue(settings, client)
    sinks, metrics = build_sinks(settings)
    for sink in sinks:
        start = getattr(sink, "start", None)
        if start is not None:
            await start()
    ctx = ExecutionContext(
        queue=queue,
        sinks=SinkFanout(sinks),
        runner=build_runner_config(settings),
        worker_id=settings.worker_id(),
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
    )
    stop_metrics = None
    if settings.effective_metrics_port:
        from supervisor.metrics import start_metrics_server

        stop_metrics = start_metrics_server(settings.effective_metrics_port, settings.metrics_host)
        log.info("metrics on %s:%d/metrics", settings.metrics_host, settings.effective_metrics_port)
    try:
        return await daemon.run()
    finally:
        FORK_SERVER.close()  # the daemon has reaped every job by now
        if stop_metrics is not None:
            stop_metrics()
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
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
    # Before any thread exists; the built-in worker is imported into it once, here.
    try:
        FORK_SERVER.start(
            preload_worker=build_runner_config(settings).command is None,
            spares=settings.concurrency,  # every slot finds a child waiting
        )
    except OSError as exc:  # each job tries again, and fails to start with the reason
        log.error("%s", exc)
    return asyncio.run(run(settings))
