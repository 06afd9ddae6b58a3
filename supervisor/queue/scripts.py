"""Loads the Lua scripts under `lua/`, each prefixed with the shared helpers, once per client."""

from __future__ import annotations

from functools import cache
from importlib import resources

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
