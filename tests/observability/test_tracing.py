"""Langfuse traces through the real SDK into a loopback OTLP/HTTP receiver that decodes them."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langfuse import Langfuse
from prometheus_client import CollectorRegistry

from supervisor import events as ev
from supervisor.metrics import DaemonMetrics
from supervisor.tracing import (
    ROOT_SPAN_NAME,
    NoopTracingSink,
    TracingSink,
    build_tracer,
    trace_id_for,
    trace_ids_for,
)
from tests.observability.otlp_receiver import (
    HangingReceiver,
    OtlpReceiver,
    ReceivedSpan,
    closed_port_url,
)
from tests.waiting import poll

SECRET_KEY = "sk-lf-never-in-a-span-4f1c"
TRIAL_TOKEN = "trial-tok-9b8e7d6c5a"
CUSTOM_SECRET = "hunter2-custom-secret"
SLACK_S = 0.5  # scheduling slack on top of a close deadline (a correctness bound)
T0 = 1_700_000_000.0


def tracer(url: str, **kw: Any) -> TracingSink:
    sink = build_tracer(
        public_key=f"pk-lf-test-{uuid.uuid4().hex[:10]}",  # the SDK keeps one client per key
        secret_key=SECRET_KEY,
        host=url,
        extra_secret_keys=("customer_password",),
        **kw,
    )
    assert isinstance(sink, TracingSink)
    return sink


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    yield r
    r.stop()


def started(job_id: str, attempt: int = 1, **kw: Any) -> ev.JobStarted:
    base: dict[str, Any] = dict(
        queue="q1",
        job_id=job_id,
        tenant_id="tenant-42",
        attempt=attempt,
        max_attempts=3,
        worker_id="host:1",
        payload={
            "job_id": job_id,
            "tenant_id": "tenant-42",
            "data_source": {
                "type": "url",
                "url": "https://example.com",
                "trial_token": TRIAL_TOKEN,
            },
            "metadata": {"customer_password": CUSTOM_SECRET, "note": "keep me"},
        },
        enqueued_at=T0,
        started_at=T0 + 2,
    )
    base.update(kw)
    return ev.JobStarted(**base)


def progress(job_id: str, pct: float, attempt: int = 1) -> ev.JobProgress:
    return ev.JobProgress(
        queue="q1",
        job_id=job_id,
        tenant_id="tenant-42",
        attempt=attempt,
        progress=pct,
        message=f"at {pct}",
        at=time.time(),
    )


def finished(job_id: str, outcome: str, attempt: int = 1, **kw: Any) -> ev.JobFinished:
    base: dict[str, Any] = dict(
        queue="q1",
        job_id=job_id,
        tenant_id="tenant-42",
        attempt=attempt,
        max_attempts=3,
        worker_id="host:1",
        outcome=outcome,
        table_status={"completed": "completed", "failed": "failed"}.get(outcome, "queued"),
        final=outcome in ("completed", "failed"),
        enqueued_at=T0,
        started_at=T0 + 2,
        finished_at=T0 + 14.5,
        peak_rss_bytes=123_456_789,
        exit_code=0 if outcome == "completed" else 1,
        ended="exited",
    )
    base.update(kw)
    return ev.JobFinished(**base)


def roots(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == ROOT_SPAN_NAME]


def meta(span: ReceivedSpan, key: str) -> Any:
    return json.loads(span.attributes[f"langfuse.observation.metadata.{key}"])


async def test_failed_attempt_is_one_error_trace_with_milestones_and_no_secrets(
    receiver: OtlpReceiver,
) -> None:
    sink = tracer(receiver.url)
    sink.job_started(started("job-1"))
    for pct in (0, 3, 10, 12, 55, 100, 100):
        sink.job_progress(progress("job-1", pct))
    sink.job_finished(
        finished("job-1", "failed", error="parser crashed: bad page", exit_code=65, signal=None)
    )
    await sink.aclose(10)

    spans = receiver.wait_for_spans(lambda s: len(roots(s)) == 1)
    (root,) = roots(spans)
    assert root.trace_id == trace_id_for("job-1", 1) == Langfuse.create_trace_id(seed="job-1:1")
    assert root.parent_span_id  # under the SDK's remote parent: the trace id is ours
    a = root.attributes
    assert a["langfuse.trace.name"] == ROOT_SPAN_NAME
    assert a["user.id"] == "tenant-42"
    assert a["session.id"] == "job-1"
    assert a["langfuse.observation.level"] == "ERROR"
    assert a["langfuse.observation.status_message"] == "parser crashed: bad page"
    assert root.is_error and root.status_message == "parser crashed: bad page"
    assert meta(root, "queue") == "q1"
    assert meta(root, "attempt") == 1
    assert meta(root, "worker") == "host:1"
    assert meta(root, "exit_code") == 65
    assert meta(root, "peak_rss_bytes") == 123_456_789
    assert meta(root, "duration_s") == 12.5
    assert root.end_ns == int((T0 + 14.5) * 1e9)

    payload = json.loads(a["langfuse.observation.input"])
    assert payload["data_source"]["trial_token"] == "[redacted]"
    assert payload["metadata"] == {"customer_password": "[redacted]", "note": "keep me"}
    output = json.loads(a["langfuse.observation.output"])
    assert output["outcome"] == "failed" and output["status"] == "failed"
    assert output["error"] == "parser crashed: bad page"

    events = [s for s in spans if s.name == "progress"]
    assert sorted(
        json.loads(e.attributes["langfuse.observation.metadata.progress"]) for e in events
    ) == [0, 10, 55, 100]
    assert {e.trace_id for e in events} == {root.trace_id}
    assert {e.parent_span_id for e in events} == {root.span_id}
    assert all(e.attributes["user.id"] == "tenant-42" for e in events)

    for body in receiver.bodies:
        for secret in (TRIAL_TOKEN, CUSTOM_SECRET, SECRET_KEY):
            assert secret.encode() not in body
    assert receiver.headers[0]["authorization"].startswith("Basic ")


async def test_each_attempt_has_its_own_trace_found_from_the_job_id(
    receiver: OtlpReceiver,
) -> None:
    sink = tracer(receiver.url)
    sink.job_started(started("job-2", attempt=1))
    sink.job_finished(
        finished(
            "job-2", "timeout", attempt=1, ended="timeout", exit_code=None, signal=15, error=None
        )
    )
    sink.job_started(started("job-2", attempt=2))
    sink.job_finished(finished("job-2", "completed", attempt=2, result={"chunks": 12}))
    await sink.aclose(10)

    spans = receiver.wait_for_spans(lambda s: len(roots(s)) == 2)
    by_trace = {s.trace_id: s for s in roots(spans)}
    assert set(by_trace) == set(trace_ids_for("job-2", 2))
    timeout = by_trace[trace_id_for("job-2", 1)]
    assert timeout.is_error
    assert timeout.attributes["langfuse.observation.level"] == "ERROR"
    assert "timeout" in timeout.attributes["langfuse.observation.status_message"]
    done = by_trace[trace_id_for("job-2", 2)]
    assert not done.is_error
    assert done.attributes.get("langfuse.observation.level", "DEFAULT") == "DEFAULT"
    assert json.loads(done.attributes["langfuse.observation.output"])["result"] == {"chunks": 12}
    assert {s.attributes["session.id"] for s in roots(spans)} == {"job-2"}


async def test_finish_without_a_start_still_gives_one_trace(receiver: OtlpReceiver) -> None:
    sink = tracer(receiver.url)
    sink.job_finished(finished("job-3", "lease_lost", table_status="", exit_code=None))
    await sink.aclose(10)
    (root,) = roots(receiver.wait_for_spans(lambda s: len(roots(s)) == 1))
    assert root.trace_id == trace_id_for("job-3", 1)
    assert root.attributes["langfuse.observation.level"] == "WARNING"


def test_no_keys_means_tracing_off_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="supervisor.tracing"):
        sink = build_tracer(public_key=None, secret_key=None, host=None)
    assert isinstance(sink, NoopTracingSink)
    lines = [r for r in caplog.records if r.name == "supervisor.tracing"]
    assert len(lines) == 1 and "tracing off" in lines[0].getMessage()


def record_jobs(sink: TracingSink, n: int) -> None:
    for i in range(n):
        job = f"bulk-{i}"
        sink.job_started(started(job))
        sink.job_progress(progress(job, 50))
        sink.job_finished(finished(job, "completed"))


@pytest.mark.parametrize("endpoint", ["down", "hanging"])
async def test_unreachable_langfuse_never_blocks_recording_or_close(endpoint: str) -> None:
    hanging = HangingReceiver() if endpoint == "hanging" else None
    url = hanging.url if hanging is not None else closed_port_url()
    export_timeout_s = 30.0
    try:
        sink = tracer(url, export_timeout_s=export_timeout_s, flush_interval_s=0.05)
        began = time.monotonic()
        record_jobs(sink, 300)
        # Had any call waited for the network, it would have taken a whole export timeout.
        assert time.monotonic() - began < export_timeout_s
        if hanging is not None:
            await poll(lambda: hanging.accepted >= 1, 10, "the exporter to reach the endpoint")
        close_timeout_s = 1.0
        began = time.monotonic()
        await sink.aclose(close_timeout_s)
        assert time.monotonic() - began < close_timeout_s + SLACK_S
    finally:
        if hanging is not None:
            hanging.stop()


async def test_export_failures_are_counted() -> None:
    registry = CollectorRegistry()
    daemon = DaemonMetrics("q1", registry=registry)
    sink = build_tracer(
        public_key=f"pk-lf-test-{uuid.uuid4().hex[:10]}",
        secret_key=SECRET_KEY,
        host=closed_port_url(),
        export_timeout_s=0.5,
        flush_interval_s=0.05,
        on_export_failure=daemon.trace_export_failure,
    )
    assert isinstance(sink, TracingSink)
    record_jobs(sink, 3)

    def failures() -> float:
        return registry.get_sample_value("ingest_trace_export_failures_total") or 0.0

    await poll(lambda: failures() >= 1, 15, "a counted export failure")
    await sink.aclose(1.0)


async def test_the_langfuse_host_is_logged_without_its_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A LANGFUSE_HOST with credentials in its URL (a proxy's) is logged with them masked."""
    url = closed_port_url().replace("://", "://lfuser:LFHOSTPASS@", 1)
    with caplog.at_level(logging.INFO, logger="supervisor.tracing"):
        sink = tracer(url)
    await sink.aclose(0.5)
    assert "Langfuse tracing on" in caplog.text
    assert "LFHOSTPASS" not in caplog.text and "lfuser:***@" in caplog.text
