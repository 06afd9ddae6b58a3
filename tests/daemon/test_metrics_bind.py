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


def test_a_daemon_started_while_redis_is_down_says_so_in_its_metrics(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    """`queue_metrics_redis_up` is 0 from the first scrape, so the alert on it can fire for
    a pool (re)started during a Redis outage; without the series it has nothing to read."""
    port, nobody = free_port(), free_port()
    start_daemon(redis_url=f"redis://127.0.0.1:{nobody}/0", INGEST_METRICS_PORT=str(port - 1))

    def scraped() -> str:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return ""

    body = wait_until(scraped, 20, "the metrics endpoint")
    up = [line for line in body.splitlines() if line.startswith("queue_metrics_redis_up{")]
    assert len(up) == 1 and up[0].endswith(" 0.0"), up
