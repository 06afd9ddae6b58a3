"""Starting a child: the one way, through a fork server (`forkserver_main` is its program).

The daemon starts the fork server once (its own session, the children's allowlisted
environment, parent-death signal towards the daemon). The server forks spares ahead of
time and hands each one's socket to the daemon once it leads its own session and process
group and dies with the server. A job's start is one message from the daemon to a
waiting spare, with the job's pipes: the spare makes them 0/1/2, closes every other fd,
resets signal dispositions and mask, applies the resource limits, switches user if
asked, changes into the job's directory and then execs the command, or, for the built-in
worker, runs `ingest_worker` in place (imported once by the server).

Nothing runs between fork and exec in the daemon itself: no preexec_fn, no fork of a
threaded process. The server reaps its children and sends (pid, wait status, CPU, max
RSS) notices that resolve each `SpawnedChild.exited`. If it dies, its pending children
resolve with an unknown status (they die with it) and the next spawn starts a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor.runner.containment import ORPHANS
from supervisor.runner.env import build_child_env
from supervisor.runner.spawn import (
    ExitStatus,
    SpawnedChild,
    SpawnSpec,
    encode_request,
    exit_status,
    with_child_pipes,
)

log = logging.getLogger(__name__)

_PROGRAM = str(Path(__file__).with_name("forkserver_main.py"))
_MAX_MESSAGE = 64 * 1024
_NOTICE_BATCH = 256


class ForkServerError(OSError):
    """The fork server could not be started or stopped answering: a start failure."""


def _import_paths() -> list[str]:
    """Where the daemon found ingest_worker, first on the server's path (a source tree)."""
    spec = importlib.util.find_spec("ingest_worker")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [os.path.dirname(next(iter(spec.submodule_search_locations)))]


class _Server:
    """One running fork server process; its messages are read on one event loop."""

    def __init__(self, spares: int, preload_worker: bool) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.children: dict[int, asyncio.Future[ExitStatus]] = {}
        self.spares: collections.deque[tuple[int, socket.socket]] = collections.deque()
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.alive = True
        self.preload = preload_worker
        sock, sock_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = sock
        # Whatever the daemon holds (Redis URL, service keys) stays out of the server.
        env = build_child_env(
            os.environ, passthrough=(), extra={}, job_id="", attempt=0, workdir="/"
        )
        for name in ("INGEST_JOB_ID", "INGEST_ATTEMPT", "HOME", "TMPDIR"):
            env.pop(name, None)
        argv = [sys.executable, "-P", _PROGRAM, str(os.getpid()), str(sock_child.fileno())]
        argv += ["1" if preload_worker else "0", *_import_paths()]
        try:
            self.proc = subprocess.Popen(  # argv list, never a shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                cwd="/",
                start_new_session=True,
                close_fds=True,
                pass_fds=(sock_child.fileno(),),
            )
        except BaseException:
            sock.close()
            raise
        finally:
            sock_child.close()
        ORPHANS.owned.add(self.proc.pid)  # waited for in shutdown(), never swept
        sock.setblocking(False)
        self._want(spares)
        log.info("fork server %d started", self.proc.pid)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the server's messages on `loop` (children of another loop are forgotten)."""
        if self.loop is loop:
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.sock.fileno())
        self.children.clear()
        self.waiters.clear()
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self._on_message)

    def _want(self, n: int, preload: bool = False) -> None:
        if preload and not self.preload:
            self.preload = True
        else:
            preload = False
        try:
            self.sock.send(json.dumps({"want": n, "preload": preload}).encode())
        except OSError:
            self.shutdown("no longer listens")

    async def take_spare(self, builtin: bool) -> tuple[int, socket.socket]:
        """A ready spare (its pid, and its socket, the caller's to close); one more is
        asked for in its place."""
        assert self.loop is not None
        while not self.spares:
            if not self.alive:
                raise ForkServerError("fork server exited")
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
        self._want(1, preload=builtin)
        return self.spares.popleft()

    def _on_message(self) -> None:
        for _ in range(_NOTICE_BATCH):
            try:
                message, fds, _flags, _addr = socket.recv_fds(
                    self.sock, _MAX_MESSAGE, 1, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message:
                for fd in fds:
                    os.close(fd)
                self.shutdown("exited")
                return
            notice = json.loads(message)
            if "spare" in notice and len(fds) == 1:
                self.spares.append((int(notice["spare"]), socket.socket(fileno=fds[0])))
                while self.waiters:
                    waiter = self.waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(None)
                        break
                continue
            for fd in fds:
                os.close(fd)
            self._exited(int(notice["pid"]), notice)

    def _exited(self, pid: int, notice: dict[str, Any]) -> None:
        future = self.children.pop(pid, None)
        if future is not None and not future.done():
            status = exit_status(int(notice["status"]), float(notice["cpu"]), int(notice["rss"]))
            future.set_result(status)
            return
        for spare in self.spares:  # a waiting spare died: forget it, ask for another
            if spare[0] == pid:
                self.spares.remove(spare)
                spare[1].close()
                self._want(1)
                return

    def shutdown(self, why: str) -> None:
        """Stop the server (its children die with it); pending children end unknown."""
        if not self.alive:
            return
        self.alive = False
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for _pid, sock in self.spares:
            sock.close()
        self.spares.clear()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            log.error("fork server %d survived SIGKILL", self.proc.pid)
        else:
            ORPHANS.owned.discard(self.proc.pid)
        if why != "closed":
            lost = len(self.children)
            log.warning("fork server %d %s; %d children lost", self.proc.pid, why, lost)
        for future in self.children.values():
            if not future.done():
                future.set_result(ExitStatus(None, None))
        self.children.clear()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)  # take_spare() sees the server gone
        self.waiters.clear()


def _sender(sock: socket.socket, message: bytes) -> Callable[[int, int, int], None]:
    def send(stdin_r: int, stdout_w: int, stderr_w: int) -> None:
        socket.send_fds(sock, [message], [stdin_r, stdout_w, stderr_w])

    return send


class ForkServer:
    """Starts children through one fork server process, started on first use or `start()`.

    `spares` children wait ready at any time, so a job's start is one message to one of
    them. `preload_worker` imports ingest_worker in the server at its start (else when the
    built-in worker is first used). Call `close()` when no child runs any more: its
    children die with it.
    """

    def __init__(
        self, *, spare_timeout_s: float = 10.0, spares: int = 2, preload_worker: bool = False
    ) -> None:
        self._spare_timeout_s = spare_timeout_s
        self._spares = spares
        self._preload = preload_worker
        self._server: _Server | None = None

    @property
    def pid(self) -> int | None:
        s = self._server
        return s.proc.pid if s is not None and s.alive else None

    def start(self, *, preload_worker: bool | None = None, spares: int | None = None) -> None:
        """Start the server now if it is not running (raises ForkServerError)."""
        if preload_worker is not None:
            self._preload = preload_worker
        if spares is not None:
            self._spares = max(1, spares)
        if self._server is not None and self._server.alive:
            return
        try:
            self._server = _Server(self._spares, self._preload)
        except (OSError, subprocess.SubprocessError) as exc:
            self._server = None
            raise ForkServerError(f"cannot start the fork server: {exc}") from None

    async def spawn(self, spec: SpawnSpec) -> SpawnedChild:
        """Start one child (OSError, KeyError for an unknown user, ForkServerError)."""
        if spec.argv is not None and not spec.argv:
            raise ValueError("empty command")
        message = encode_request(spec)
        for _attempt in range(3):  # a spare that died just now is replaced
            self.start()
            server = self._server
            assert server is not None
            server.attach(asyncio.get_running_loop())
            try:
                async with asyncio.timeout(self._spare_timeout_s):
                    pid, sock = await server.take_spare(builtin=spec.argv is None)
            except TimeoutError:
                # Restarting the server would kill every job it runs; only an idle one is
                # restarted (a server that lost its way). Otherwise this one start fails.
                if not server.children:
                    server.shutdown("gave no spare child in time")
                raise ForkServerError("the fork server gave no spare child in time") from None

            try:
                with sock:
                    _, (stdin_w, stdout_r, stderr_r) = with_child_pipes(_sender(sock, message))
            except OSError:
                continue
            exited = asyncio.get_running_loop().create_future()
            server.children[pid] = exited
            return SpawnedChild(pid, stdin_w, stdout_r, stderr_r, exited=exited)
        raise ForkServerError("spare children keep dying before their job")

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown("closed")
            self._server = None


FORK_SERVER = ForkServer()  # the daemon's; `RunnerConfig.fork_server` None means this one


def _forget_after_fork() -> None:
    # A forked copy of this process (a test's fork) must not talk to our server.
    FORK_SERVER._server = None


os.register_at_fork(after_in_child=_forget_after_fork)
