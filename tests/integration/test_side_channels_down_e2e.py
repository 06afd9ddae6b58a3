"""Issues 5 and 6: side channels that are down never slow jobs or hold up shutdown.

Four daemons run at once under the same load, each on its own queue: one with no side
channels (the baseline), one whose Langfuse refuses connections, one whose Langfuse accepts
and never answers, and one whose PostgreSQL status store refuses connections (its rows wait
in the status outbox in Redis).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import redis

from supervisor.queue.keys import QueueKeys
from tests.conftest import REDIS_URL
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until
from tests.integration.conftest import (
    EXIT_BOUND_S,
    batch_times,
    free_port,
    langfuse_env,
    metrics_env,
)
from tests.observability.otlp_receiver import HangingReceiver, closed_port_url
from tests.observability.test_metrics import samples, scrape, value

JOBS_PER_DAEMON = 25


def test_unreachable_langfuse_or_status_store_costs_no_speed_and_a_bounded_shutdown(
    start_daemon: Callable[..., DaemonProcess],
    q: SyncQueue,
    more_queues: Callable[[str], SyncQueue],
) -> None:
    hanging = HangingReceiver()
    try:
        queues = {
            "baseline": q,
            "langfuse-down": more_queues("lf-down"),
            "langfuse-hanging": more_queues("lf-hang"),
            "status-down": more_queues("st-down"),
        }
        closed_port = closed_port_url().rsplit(":", 1)[1]
        ports = {"langfuse-down": free_port(), "status-down": free_port()}
        env: dict[str, dict[str, str]] = {
            "baseline": {},
            "langfuse-down": {
                **langfuse_env(closed_port_url(), "pk-lf-e2e-down"),
                # The SDK's own setting: export soon, so a failed export is seen in time.
                "LANGFUSE_FLUSH_INTERVAL": "0.5",
                **metrics_env(ports["langfuse-down"]),
            },
            "langfuse-hanging": langfuse_env(hanging.url, "pk-lf-e2e-hanging"),
            "status-down": {
                "INGEST_STATUS_BACKEND": "postgres",
                "INGEST_STATUS_DSN": f"postgresql://root@127.0.0.1:{closed_port}/test",
                **metrics_env(ports["status-down"]),
            },
        }
        daemons = {
            name: start_daemon(INGEST_QUEUE=sq.queue, **env[name]) for name, sq in queues.items()
        }
        for d in daemons.values():
            d.wait_ready()
        batches = {
            name: (sq, [job(f"{name}-{i:02d}") for i in range(JOBS_PER_DAEMON)])
            for name, sq in queues.items()
        }
        took = batch_times(batches, timeout=90)
        # A correctness bound, not a benchmark: a slot that waited on a side channel would
        # take seconds per job (the export or connect timeout), far beyond this.
        for name in env:
            assert took[name] <= 3 * took["baseline"] + 5, took

        # The failures show on /metrics: status writes failing with every change still in
        # the outbox, and span batches Langfuse never took.
        down = queues["status-down"].queue

        def outbox_behind() -> bool:
            status = samples(scrape(ports["status-down"]))
            # Per job at least: queued, processing, completed.
            return (
                value(status, "ingest_status_outbox_unprojected", queue=down) >= 3 * JOBS_PER_DAEMON
                and value(status, "ingest_status_outbox_age_seconds", queue=down) > 0
                and value(status, "ingest_status_write_failures_total", queue=down) >= 1
            )

        wait_until(outbox_behind, 20, "the outbox backlog and failed writes shown", interval=0.2)
        wait_until(
            lambda: (
                value(samples(scrape(ports["langfuse-down"])), "ingest_trace_export_failures_total")
                >= 1
            ),
            15,
            "a failed trace export counted",
            interval=0.2,
        )

        sent = time.monotonic()
        for d in daemons.values():
            d.signal(signal.SIGTERM)
        for d in daemons.values():
            assert d.wait_exit(EXIT_BOUND_S) == 0, d.log()
        # Each exit happened no later than this: the flush deadline bounds every sink.
        assert time.monotonic() - sent <= EXIT_BOUND_S
    finally:
        hanging.stop()

    assert hanging.accepted > 0  # the SDK did try the hanging endpoint
    for name in ("langfuse-down", "langfuse-hanging"):
        assert "Langfuse tracing on" in daemons[name].log()
    # The status-down daemon says it left rows behind; they wait in the outbox in Redis.
    log = daemons["status-down"].log()
    assert "status write of" in log
    assert "status rows not all written before shutdown" in log
    client = redis.Redis.from_url(REDIS_URL)
    try:
        outbox = int(client.xlen(QueueKeys(queues["status-down"].queue).status_outbox))
    finally:
        client.close()
    assert outbox >= 3 * JOBS_PER_DAEMON
    for name in ("baseline", "langfuse-down", "langfuse-hanging"):
        assert "not all written" not in daemons[name].log()
    assert "Langfuse tracing off" in daemons["baseline"].log()
