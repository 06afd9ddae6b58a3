"""Bounded keeping of one output stream: the first bytes, the last bytes, a drop counter."""

from __future__ import annotations

from collections import deque


class BoundedOutput:
    """Keeps at most `head_bytes + tail_bytes` of a stream, whatever the child writes.

    Chunks are kept as they arrived (no copying into one growing buffer); whole chunks
    fall off the front of the tail and only the oldest one is ever sliced.
    """

    def __init__(self, tail_bytes: int = 1024 * 1024, head_bytes: int = 4096) -> None:
        self._tail_cap = max(tail_bytes, 0)
        self._head_cap = max(head_bytes, 0)
        self._head = bytearray()
        self._tail: deque[bytes] = deque()
        self._tail_len = 0
        self.total_bytes = 0
        self.dropped_bytes = 0

    def append(self, data: bytes) -> None:
        if not data:
            return
        self.total_bytes += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
            if not data:
                return
        if len(data) >= self._tail_cap:
            self.dropped_bytes += self._tail_len + len(data) - self._tail_cap
            self._tail.clear()
            data = data[len(data) - self._tail_cap :] if self._tail_cap else b""
            self._tail_len = 0
        if data:
            self._tail.append(data)
            self._tail_len += len(data)
        excess = self._tail_len - self._tail_cap
        while excess > 0:
            first = self._tail[0]
            if len(first) <= excess:
                self._tail.popleft()
                self._tail_len -= len(first)
                self.dropped_bytes += len(first)
                excess -= len(first)
            else:
                self._tail[0] = first[excess:]
                self._tail_len -= excess
                self.dropped_bytes += excess
                excess = 0

    @property
    def kept_bytes(self) -> int:
        return len(self._head) + self._tail_len

    def head(self) -> bytes:
        return bytes(self._head)

    def tail(self) -> bytes:
        return b"".join(self._tail)

    def last(self, n: int) -> bytes:
        """The last n bytes kept (head included when nothing was dropped)."""
        tail = self.tail()
        if len(tail) >= n or self.dropped_bytes:
            return tail[-n:] if n else b""
        return (bytes(self._head) + tail)[-n:] if n else b""
