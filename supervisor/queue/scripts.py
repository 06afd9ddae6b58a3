"""Loads the Lua scripts under `lua/`, each prefixed with the shared helpers, once per client."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "renew",
    "progress",
    "complete",
    "fail",
    "release",
    "cancel",
    "cancel_ack",
    "retry",
    "reap",
    "purge",
    "resend_status",
    "status_rows",
    "status_versions",
    "job_tenants",
    # Status rows held back by a row lock (supervisor/status/parked.py).
    "park_rows",
    "unpark_row",
    "counts",
    # Heartbeats (supervisor/queue/workers.py), stamped and judged on the server's clock.
    "heartbeat",
    "live_workers",
)


@cache
def script_source(name: str) -> str:
    if name not in SCRIPT_NAMES:
        raise KeyError(name)
    lua = resources.files("supervisor.queue") / "lua"
    return (lua / "_lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


async def run_script(script: AsyncScript, keys: Sequence[Any], args: Sequence[Any] = ()) -> Any:
    """Run one of the scripts. Redis before 7 runs a writing script on a replica, or past
    its maxmemory, and fails its first write with a script error quoting READONLY or OOM:
    that is raised as the ReadOnlyError (which the daemon treats as transient: a failover)
    or OutOfMemoryError it is, as Redis 7 reports them."""
    try:
        return await script(keys=list(keys), args=list(args))
    except ResponseError as exc:
        text = str(exc)
        if not isinstance(exc, ReadOnlyError) and "-READONLY " in text:
            raise ReadOnlyError(text) from None
        if not isinstance(exc, OutOfMemoryError) and "-OOM " in text:
            raise OutOfMemoryError(text) from None
        raise
