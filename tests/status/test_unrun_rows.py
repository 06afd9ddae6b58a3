"""Rows of jobs that ended without running in their last attempt: cancelled or purged
while waiting for a retry. No attempt ended them, so they show no run time and no memory
of an earlier attempt (the docs define both as the attempt that ended the job's)."""

from __future__ import annotations

import pytest

from supervisor.queue.jobqueue import JobQueue
from supervisor.status.projector import StatusProjector
from tests.status.conftest import Store
from tests.status.snapshots import payload


@pytest.mark.parametrize("how", ["cancel", "purge"])
async def test_a_job_ended_while_waiting_shows_no_run_of_an_earlier_attempt(
    store: Store, queue: JobQueue, how: str
) -> None:
    backend = store.backend()
    try:
        await queue.enqueue(payload("waited", max_attempts=3))
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None
        failed = await queue.fail(
            "waited", claim.token, "exit 75", retryable=True, attempt=1, peak_rss_bytes=123456
        )
        assert failed.outcome == "retry"
        if how == "cancel":
            assert await queue.cancel("waited") == "cancelled"
        else:
            for state in ("waiting", "delayed"):
                await queue.purge(state)
        assert await StatusProjector(queue.client, queue.keys, backend, consumer="p").drain(10.0)
        row = await backend.fetch("waited")
        assert row is not None and row["status"] == "cancelled", row
        assert row["duration_ms"] is None and row["peak_rss_bytes"] is None, row
    finally:
        await backend.aclose()


async def test_a_job_failing_into_a_retry_with_its_cancel_pending_shows_cancelled_at_once(
    store: Store, queue: JobQueue
) -> None:
    """Cancelled while it ran, its attempt then failed before the cancel was acknowledged:
    the row shows it cancelled at once, with that attempt's run, never 'queued' for the
    length of a backoff."""
    backend = store.backend()
    try:
        await queue.enqueue(payload("flagged", max_attempts=3))
        claim = await queue.claim("w", lease_s=30, timeout_s=5)
        assert claim is not None
        assert await queue.cancel("flagged") == "requested"
        failed = await queue.fail(
            "flagged", claim.token, "exit 75", retryable=True, attempt=1, peak_rss_bytes=123456
        )
        assert failed.outcome == "cancelled"
        assert await StatusProjector(queue.client, queue.keys, backend, consumer="p").drain(10.0)
        row = await backend.fetch("flagged")
        assert row is not None and row["status"] == "cancelled", row
        assert row["duration_ms"] is not None and row["peak_rss_bytes"] == 123456, row
        assert row["error"] == "exit 75" and row["attempt"] == 1, row
    finally:
        await backend.aclose()
