"""Failing a claimed job the normal path could not run, when the daemon is stopping."""

from __future__ import annotations

import logging
import time

import pytest
from redis.asyncio import Redis

from supervisor.execution_context import ExecutionContext
from supervisor.main import build_runner_config
from supervisor.queue.jobqueue import Claim, JobQueue
from supervisor.settings import load_settings
from supervisor.sinks import SinkFanout
from supervisor.unrun import fail_unrun
from tests.redis_server import PrivateRedis


async def test_a_failure_that_redis_cannot_take_gives_up_at_the_stop_deadline(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """An unrunnable job is failed while Redis holds every write (CLIENT PAUSE) and the
    daemon is stopping: the failure gives up by the stop's settle deadline, as every other
    settling write does, not half a lease later (the lease brings the job back)."""
    client = Redis.from_url(private_redis.url)
    queue = JobQueue(client, "unrun-stop")
    await queue.enqueue({"job_id": "j1", "tenant_id": "t", "data_source": {"type": "text"}})
    claim = await queue.try_claim("w-unrun", 600)
    assert isinstance(claim, Claim)
    ctx = ExecutionContext(
        queue=queue,
        sinks=SinkFanout([]),
        runner=build_runner_config(load_settings([], env={})),
        worker_id="w-unrun",
        lease_s=600,  # half a lease: five minutes
        job_timeout_s=5,
        max_job_timeout_s=5,
        kill_grace_s=0.5,
        secret_keys=frozenset(),
    )
    ctx.settle_by.bring_forward(time.monotonic() + 1.0)
    await client.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
    try:
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="supervisor.daemon"):
            await fail_unrun(ctx, queue, 0, claim, "Job payload refused: test", retryable=False)
        took = time.monotonic() - started
    finally:
        await client.execute_command("CLIENT", "UNPAUSE")
    assert took < 5, f"gave up after {took:.1f}s"
    assert "could not record the failure of j1" in caplog.text
    rec = await queue.get("j1")
    assert rec is not None and rec.state.value == "active"  # the lease brings it back
    await client.aclose()
