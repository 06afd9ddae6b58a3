"""No secret of a payload leaves the daemon, even when the child quotes it: not in the
Redis record or event stream, the status table, the Langfuse export, or the daemon's log."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from supervisor.queue.states import JobState
from supervisor.status import build_status_backend
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until
from tests.integration.conftest import EXIT_BOUND_S, langfuse_env, stop_daemon, with_queue
from tests.observability.otlp_receiver import OtlpReceiver
from tests.observability.test_tracing import roots

LEAKY = Path(__file__).resolve().parent / "children" / "leaky.py"
DS_TOKEN = "trial-tok-leaky-0f9e8d7c"
# The old producer's top-level token, with characters URL- and JSON-encoding change.
TOP_TOKEN = 'tr_leaky/0f9e+8d7c "é"'


LIST_TOKEN = "sk-leaky-list-0f9e8d7c"
NUMBER_TOKEN = 987654321987


@pytest.mark.parametrize(
    ("where", "token"),
    [
        ("data_source", DS_TOKEN),
        ("top", TOP_TOKEN),
        # Secrets stored as something other than a string: every value under a secret-named
        # key is one, however it is stored.
        ("metadata list", LIST_TOKEN),
        ("metadata number", str(NUMBER_TOKEN)),
    ],
)
def test_a_child_quoting_its_secret_never_gets_it_past_the_daemon(
    start_daemon: Callable[..., DaemonProcess],
    q: SyncQueue,
    receiver: OtlpReceiver,
    tmp_path: Path,
    where: str,
    token: str,
) -> None:
    status_db = tmp_path / "status.sqlite3"
    payloads = [
        job("leak-fail", max_attempts=1),
        job("leak-ok", succeed=True),
        # Exits 1 at once: the daemon's start gate logs it with the (scrubbed) error.
        job("leak-crash", max_attempts=1, exit=1),
    ]
    for p in payloads:
        if where == "top":
            p["trial_token"] = token
        elif where == "metadata list":
            p.setdefault("metadata", {})["api_key"] = [token, "second-key-of-the-list"]
        elif where == "metadata number":
            p.setdefault("metadata", {})["password"] = NUMBER_TOKEN
        else:
            p["data_source"]["trial_token"] = token
    forms = {token, quote(token), quote_plus(token), json.dumps(token)[1:-1], token[-12:]}
    q.enqueue_many(payloads)
    daemon = start_daemon(
        INGEST_WORKER_COMMAND=f"{sys.executable} {LEAKY}",
        INGEST_STATUS_BACKEND="sqlite",
        INGEST_STATUS_SQLITE_PATH=str(status_db),
        **langfuse_env(receiver.url, "pk-lf-e2e-leaky"),
    )
    wait_until(
        lambda: (
            q.get("leak-fail").state is JobState.FAILED
            and q.get("leak-ok").state is JobState.COMPLETED
            and q.get("leak-crash").state is JobState.FAILED
        ),
        30,
        "all jobs final",
    )
    stop_daemon(daemon, EXIT_BOUND_S)  # flushes the status writer and the traces

    failed = q.get("leak-fail")
    assert "request refused for token [redacted]" in (failed.error or "")

    async def everything(queue: Any) -> list[str]:
        texts = [repr(await queue.get(p["job_id"])) for p in payloads]
        texts += [repr(e) for e in await queue.read_events("0-0", block_ms=1, count=10_000)]
        return texts

    redis_texts = with_queue(q, everything)
    assert not [t for t in redis_texts if any(f in t for f in forms)]

    async def rows() -> list[Any]:
        backend = build_status_backend("sqlite", sqlite_path=str(status_db))
        try:
            return [await backend.fetch(p["job_id"]) for p in payloads]
        finally:
            await backend.aclose()

    stored = asyncio.run(rows())
    assert all(r is not None for r in stored)
    assert not [f for f in forms if f in repr(stored)]

    receiver.wait_for_spans(lambda s: len(roots(s)) >= 3)
    assert receiver.bodies and not [b for b in receiver.bodies if token[-12:].encode() in b]
    assert not [f for f in forms if f in daemon.log()]


@pytest.mark.parametrize("cut", ["progress", "stderr"])
def test_a_cut_through_a_long_secret_leaves_no_piece_of_it(
    start_daemon: Callable[..., DaemonProcess], q: SyncQueue, tmp_path: Path, cut: str
) -> None:
    # Longer than the progress message's limit and than the stderr the error keeps.
    token = "tok-" + "".join(f"q{i:04x}" for i in range(740))
    payload = job(f"leak-cut-{cut}", max_attempts=1, cut=cut)
    payload["data_source"]["trial_token"] = token
    q.enqueue(payload)
    status_db = tmp_path / "status.sqlite3"
    daemon = start_daemon(
        INGEST_WORKER_COMMAND=f"{sys.executable} {LEAKY}",
        INGEST_STATUS_BACKEND="sqlite",
        INGEST_STATUS_SQLITE_PATH=str(status_db),
    )
    wait_until(lambda: q.get(payload["job_id"]).state is JobState.FAILED, 30, "job failed")
    stop_daemon(daemon, EXIT_BOUND_S)

    async def everything(queue: Any) -> list[str]:
        texts = [repr(await queue.get(payload["job_id"]))]
        texts += [repr(e) for e in await queue.read_events("0-0", block_ms=1, count=10_000)]
        return texts

    async def row() -> Any:
        backend = build_status_backend("sqlite", sqlite_path=str(status_db))
        try:
            return await backend.fetch(payload["job_id"])
        finally:
            await backend.aclose()

    seen = "\n".join([*with_queue(q, everything), repr(asyncio.run(row())), daemon.log()])
    pieces = {token[i : i + 12] for i in range(0, len(token) - 12)}
    assert not [p for p in pieces if p in seen][:3]
