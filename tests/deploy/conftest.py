"""Fixtures of the deployment tests: a notify socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class NotifyListener:
    """Binds a datagram socket (a short path under /tmp, or an abstract name) and collects
    the messages it receives as lists of `KEY=VALUE` fields."""

    def __init__(self, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: Path | None = None
        if abstract:
            name = f"ingest-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            # sun_path is limited to 108 bytes; pytest's tmp_path can be longer.
            self._dir = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
            path = str(self._dir / "notify")
            self.sock.bind(path)
            self.env_value = path
        self.messages: list[list[str]] = []

    def receive(self, timeout_s: float) -> list[str] | None:
        self.sock.settimeout(max(timeout_s, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        fields = data.decode().split("\n")
        self.messages.append(fields)
        return fields

    def wait_for_field(self, accept: Callable[[str], bool], what: str, timeout_s: float) -> str:
        """The first field, received so far or until the deadline, that `accept`s."""
        deadline = time.monotonic() + timeout_s
        checked = 0
        while True:
            for message in self.messages[checked:]:
                for f in message:
                    if accept(f):
                        return f
            checked = len(self.messages)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout_s}s; got {self.messages!r}")
            self.receive(left)

    def wait_for(self, field: str, timeout_s: float) -> str:
        return self.wait_for_field(lambda f: f == field, repr(field), timeout_s)

    def wait_for_prefix(self, prefix: str, timeout_s: float) -> str:
        return self.wait_for_field(lambda f: f.startswith(prefix), f"{prefix}...", timeout_s)

    def count(self, field: str) -> int:
        return sum(1 for fields in self.messages if field in fields)

    def close(self) -> None:
        self.sock.close()
        if self._dir is not None:
            for p in self._dir.iterdir():
                p.unlink()
            os.rmdir(self._dir)


@pytest.fixture(params=["path", "abstract"])
def notify_listener(request: pytest.FixtureRequest) -> Iterator[NotifyListener]:
    listener = NotifyListener(abstract=request.param == "abstract")
    yield listener
    listener.close()
