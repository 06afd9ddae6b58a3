"""Non-blocking pipe ends driven by the event loop: one chunk per readiness, no buffering.

Each read hands a fixed-size chunk straight to a consumer, so memory per child is bounded
by what the consumer keeps, never by what the child writes.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import os
import termios
from collections.abc import Callable


def unread_bytes(fd: int) -> int:
    """How many bytes wait unread in the pipe `fd` reads from (0 when it cannot be told)."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, count, True)
    except OSError:
        return 0
    return count[0]


class PipeReader:
    """`on_data` gets each chunk and may answer how many seconds to wait before the next
    read (a consumer over its budget): the pipe then fills and holds the writer back."""

    def __init__(self, fd: int, on_data: Callable[[bytes], float | None], chunk_bytes: int) -> None:
        self._fd = fd
        self._on_data = on_data
        self._chunk = chunk_bytes
        self._loop = asyncio.get_running_loop()
        self.eof: asyncio.Future[None] = self._loop.create_future()
        self._open = True
        self._paused: asyncio.TimerHandle | None = None
        self._loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, self._chunk)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.stop()
            return
        wait = self._on_data(data)
        if wait and self._open and self._paused is None:
            self._loop.remove_reader(self._fd)
            self._paused = self._loop.call_later(wait, self.resume)

    def resume(self) -> None:
        """Read again now if paused (at the pause's end, or to drain what is left)."""
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
            if self._open:
                self._loop.add_reader(self._fd, self._readable)

    def stop(self) -> None:
        """Stop reading (EOF or abandoned); the fd itself is closed by its owner."""
        if self._open:
            self._open = False
            if self._paused is not None:
                self._paused.cancel()
                self._paused = None
            else:
                self._loop.remove_reader(self._fd)
        if not self.eof.done():
            self.eof.set_result(None)


class PipeWriter:
    """Writes one payload then closes the pipe; gives up quietly if the child never reads."""

    def __init__(self, fd: int, payload: bytes, close_fd: Callable[[], None]) -> None:
        self._fd = fd
        self._view = memoryview(payload)
        self._close_fd = close_fd
        self._loop = asyncio.get_running_loop()
        self._registered = False
        self.closed = False
        self._write()

    def _write(self) -> None:
        while self._view:
            try:
                n = os.write(self._fd, self._view)
            except (BlockingIOError, InterruptedError):
                if not self._registered:
                    self._registered = True
                    self._loop.add_writer(self._fd, self._write)
                return
            except OSError:  # EPIPE: the child closed stdin or exited
                break
            self._view = self._view[n:]
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._registered:
            self._registered = False
            self._loop.remove_writer(self._fd)
        self._view.release()
        with contextlib.suppress(OSError):
            self._close_fd()
