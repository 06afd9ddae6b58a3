"""Issue 18 end to end: a real daemon runs the real ingest_worker embedding through the
loopback OpenAI-protocol API; the RESULT's embedding record (model, dimensions, requests,
tokens) reaches the status row and the Langfuse trace, and the API key reaches neither."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor.queue.states import JobState
from supervisor.tracing import trace_id_for
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until
from tests.integration.conftest import EXIT_BOUND_S, langfuse_env, stop_daemon
from tests.integration.test_status_e2e import fetch_rows
from tests.observability.otlp_receiver import OtlpReceiver
from tests.observability.test_tracing import roots
from tests.worker.embeddings_api import KEY, Fault, embeddings_api


def test_embedding_cost_reaches_the_status_row_and_the_trace(
    start_daemon: Callable[..., DaemonProcess],
    q: SyncQueue,
    receiver: OtlpReceiver,
    tmp_path: Path,
) -> None:
    status_path = str(tmp_path / "status.sqlite3")
    with embeddings_api() as api:
        api.script = [Fault(429, {"Retry-After": "0.2"})]
        payload = job("emb-1")
        payload["data_source"] = {"type": "text", "text": "tides and currents " * 60}
        q.enqueue(payload)
        daemon = start_daemon(
            INGEST_WORKER_COMMAND="",  # the real `python -m ingest_worker`
            INGEST_STATUS_BACKEND="sqlite",
            INGEST_STATUS_SQLITE_PATH=status_path,
            INGEST_EMBEDDER="openai",
            INGEST_EMBEDDING_MODEL="test-embed-small",
            INGEST_EMBEDDING_BASE_URL=api.base_url,
            INGEST_EMBEDDING_API_KEY=KEY,
            INGEST_EMBEDDING_BATCH_SIZE="2",
            INGEST_CHUNK_SIZE="200",
            INGEST_CHUNK_OVERLAP="0",
            **langfuse_env(receiver.url, "pk-lf-e2e-embed"),
        )
        final = (JobState.COMPLETED, JobState.FAILED)
        wait_until(
            lambda: (r := q.get("emb-1")) is not None and r.state in final,
            45, "job finished", interval=0.1,
        )  # fmt: skip
        rec = q.get("emb-1")
        assert rec.state is JobState.COMPLETED, f"{rec.error}\n{daemon.log()}"
        requests = len(api.requests)

    embedding = rec.result["embedding"]
    tokens = 3 * 60
    assert embedding == {
        "embedder": "openai", "model": "test-embed-small",
        "endpoint": api.base_url + "/embeddings", "dimensions": 16,
        "requests": requests, "retries": 1, "prompt_tokens": tokens, "total_tokens": tokens,
    }  # fmt: skip
    assert requests == 1 + (rec.result["chunks"] + 1) // 2

    holder: dict[str, Any] = {}

    def row_done() -> bool:
        holder["row"] = fetch_rows("sqlite", {"sqlite_path": status_path}, ["emb-1"])["emb-1"]
        return bool(holder["row"]) and holder["row"]["status"] == "completed"

    wait_until(row_done, 20, "status row completed", interval=0.1)
    assert holder["row"]["result"]["embedding"] == embedding

    stop_daemon(daemon, EXIT_BOUND_S)
    spans = receiver.wait_for_spans(
        lambda s: any(r.trace_id == trace_id_for("emb-1", 1) for r in roots(s))
    )
    (root,) = [r for r in roots(spans) if r.trace_id == trace_id_for("emb-1", 1)]
    output = json.loads(root.attributes["langfuse.observation.output"])
    assert output["result"]["embedding"] == embedding
    everything = daemon.log() + json.dumps([s.attributes for s in spans], default=str)
    assert KEY not in everything
