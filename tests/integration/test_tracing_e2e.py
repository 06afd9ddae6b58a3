"""Issue 6, Langfuse through the daemon: the real SDK inside a real daemon exports to a loopback
OTLP receiver; an unreachable or hanging Langfuse neither slows jobs nor holds up shutdown."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from supervisor.tracing import trace_id_for
from tests.daemon.conftest import DaemonProcess, SyncQueue, job
from tests.integration.conftest import (
    EXIT_BOUND_S,
    LANGFUSE_SECRET,
    langfuse_env,
    run_batch,
    stop_daemon,
)
from tests.observability.otlp_receiver import OtlpReceiver
from tests.observability.test_tracing import meta, roots

TRIAL_TOKEN = "trial-tok-e2e-5d4c3b2a"
CUSTOM_SECRET = "custom-pw-e2e-77aa"


def secret_job(job_id: str, **meta: Any) -> dict[str, Any]:
    payload = job(job_id, trial_token=TRIAL_TOKEN, customer_password=CUSTOM_SECRET, **meta)
    payload["data_source"]["trial_token"] = TRIAL_TOKEN
    return payload


def test_each_attempt_arrives_as_a_trace_with_its_derived_id_and_no_secrets(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, receiver: OtlpReceiver
) -> None:
    daemon = start_daemon(**langfuse_env(receiver.url, "pk-lf-e2e-traces"))
    daemon.wait_ready()
    run_batch(q, [secret_job("traced"), secret_job("traced-flaky", fail_until_attempt=2)])
    # Shutdown flushes what the SDK still buffers, within its deadline.
    stop_daemon(daemon, EXIT_BOUND_S)

    expected = {
        trace_id_for("traced", 1): ("traced", 1),
        trace_id_for("traced-flaky", 1): ("traced-flaky", 1),
        trace_id_for("traced-flaky", 2): ("traced-flaky", 2),
    }
    spans = receiver.wait_for_spans(lambda s: len(roots(s)) >= 3)
    by_trace = {r.trace_id: r for r in roots(spans)}
    assert set(by_trace) == set(expected)
    for trace_id, (job_id, attempt) in expected.items():
        root = by_trace[trace_id]
        assert root.attributes["session.id"] == job_id
        assert root.attributes["user.id"] == "tenant-a"
        assert meta(root, "queue") == q.queue
        assert meta(root, "attempt") == attempt
        payload = json.loads(root.attributes["langfuse.observation.input"])
        assert payload["data_source"]["trial_token"] == "[redacted]"
        assert payload["metadata"]["trial_token"] == "[redacted]"
        assert payload["metadata"]["customer_password"] == "[redacted]"
        # Milestones of the child's PROGRESS lines hang under the attempt's root span.
        progress = [s for s in spans if s.trace_id == trace_id and s.name == "progress"]
        assert progress and {s.parent_span_id for s in progress} == {root.span_id}

    retried = by_trace[trace_id_for("traced-flaky", 1)]
    assert retried.is_error and "exited with code 75" in retried.status_message
    assert meta(retried, "exit_code") == 75
    done = by_trace[trace_id_for("traced-flaky", 2)]
    assert not done.is_error
    assert json.loads(done.attributes["langfuse.observation.output"])["outcome"] == "completed"

    for body in receiver.bodies:
        for secret in (TRIAL_TOKEN, CUSTOM_SECRET, LANGFUSE_SECRET):
            assert secret.encode() not in body
    for headers in receiver.headers:
        assert not any(TRIAL_TOKEN in v or CUSTOM_SECRET in v for v in headers.values())
    assert TRIAL_TOKEN not in daemon.log() and LANGFUSE_SECRET not in daemon.log()
