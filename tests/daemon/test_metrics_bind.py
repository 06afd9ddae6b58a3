"""The daemon's /metrics listens on loopback unless the operator names another address."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.daemon.conftest import DaemonProcess
from tests.redis_server import free_port
from tests.waiting import wait_until


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net shows them) with a TCP listener on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(address)
    return found


def test_metrics_bind_loopback_by_default(start_daemon: Callable[..., DaemonProcess]) -> None:
    port = free_port()
    # The fixture's daemon is instance 1: it serves on the base port + 1.
    daemon = start_daemon(INGEST_METRICS_PORT=str(port - 1))
    daemon.wait_ready()
    wait_until(lambda: listening_addresses(port), 10, "the metrics listener")
    assert listening_addresses(port) == {"0100007F"}, "not 127.0.0.1 only"
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
