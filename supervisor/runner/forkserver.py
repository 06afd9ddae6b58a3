"""Starting a child: the one way, through a fork server (`forkserver_main` is its program).

The daemon starts the fork server once (its own session, the children's allowlisted
environment, parent-death signal towards the daemon). Every child is set up alike: its
own session and process group, the job's pipes as 0/1/2 and no other fd, default signal
dispositions and an empty mask, the resource limits, the job's directory.

- A command (no user switch) is one request to the server, which starts it with
  `posix_spawn` (as prlimit(1) running it when it has limits) and answers with its pid.
- The built-in worker, and a command run as another user, go to a spare: a fork of the
  server made ahead of time that leads its own session and dies with the server. The
  request and the pipes go straight to the waiting spare, which sets itself up, switches
  user if asked, and execs the command or runs `ingest_worker` in place (imported once by
  the server).

Nothing runs between fork and exec in the daemon itself: no preexec_fn, no fork of a
threaded process. The server reaps its children and sends (pid, wait status, CPU, max
RSS) notices that resolve each `SpawnedChild.exited`. If it dies, its pending children
resolve with an unknown status (a command's process group is killed, a spare's child dies
with the server) and the next spawn starts a new server.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor.runner.containment import ORPHANS
from supervisor.runner.env import inherited_env
from supervisor.runner.forkserver_main import recv_fds
from supervisor.runner.spawn import (
    PRLIMIT,
    ExitStatus,
    Launcher,
    SpawnedChild,
    SpawnRefused,
    SpawnSpec,
    execvp_runs_as_is,
    exit_status,
    spawn_request,
    through_prlimit,
    with_child_pipes,
)
from supervisor.runner.stopped import continue_if_stopped

log = logging.getLogger(__name__)

_PROGRAM = str(Path(__file__).with_name("forkserver_main.py"))
_MAX_MESSAGE = 64 * 1024
# One request is one datagram; the kernel refuses a datagram larger than the socket's send
# buffer (about 200 KiB by default).
MAX_REQUEST_BYTES = 128 * 1024
_NOTICE_BATCH = 256
# How often the daemon looks whether its server or a spare was stopped (see stopped.py).
STOPPED_CHECK_S = 1.0


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
        self.spares_coming = 0  # asked for, not yet delivered
        # Spawn requests in the order sent; the server answers them in that order.
        self.answers: collections.deque[asyncio.Future[tuple[int, asyncio.Future[ExitStatus]]]] = (
            collections.deque()
        )
        self.alive = True
        self.preload = preload_worker
        self.stopped_check: asyncio.TimerHandle | None = None
        sock, sock_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = sock
        # Whatever the daemon holds (Redis URL, service keys) stays out of the server: it
        # gets only the allowlist every child gets, none of a job's own variables.
        env = inherited_env(os.environ, passthrough=())
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
        """Read the server's messages on `loop`. A server still owing another loop an
        answer or an exit is stopped instead (its messages would go to the wrong caller)."""
        if self.loop is loop:
            return
        if self.answers or self.children:
            self.shutdown("was left by another event loop")
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(self.sock.fileno())
        self.waiters.clear()
        self.loop = loop
        loop.add_reader(self.sock.fileno(), self._on_message)
        self._check_stopped()

    def _check_stopped(self) -> None:
        """Continue the server and its waiting spares if they were stopped (every
        STOPPED_CHECK_S while it runs): a stopped spare would hold its job until the
        job's timeout. Jobs' own processes are left as they are."""
        if self.stopped_check is not None:
            self.stopped_check.cancel()
        if not self.alive or self.loop is None or self.loop.is_closed():
            return
        continue_if_stopped(self.proc.pid)
        self.stopped_check = self.loop.call_later(STOPPED_CHECK_S, self._check_stopped)

    def _want(self, n: int, preload: bool = False) -> None:
        if preload and not self.preload:
            self.preload = True
        else:
            preload = False
        try:
            self.sock.send(json.dumps({"want": n, "preload": preload}).encode())
        except OSError:
            self.shutdown("no longer listens")
        else:
            self.spares_coming += n

    async def take_spare(self, builtin: bool) -> tuple[int, socket.socket]:
        """A ready spare (its pid, and its socket, the caller's to close); one more is
        asked for in its place."""
        assert self.loop is not None
        while not self.spares:
            if not self.alive:
                raise ForkServerError("fork server exited")
            if not self.spares_coming:  # a server started with no spares
                self._want(1, preload=builtin)
                continue
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
        self._want(1, preload=builtin)
        return self.spares.popleft()

    def request_spawn(
        self, message: bytes, stdin_r: int, stdout_w: int, stderr_w: int
    ) -> asyncio.Future[tuple[int, asyncio.Future[ExitStatus]]]:
        """Ask the server to start a command now; resolves to (pid, exit future)."""
        assert self.loop is not None
        if not self.alive:
            raise ForkServerError("fork server exited")
        socket.send_fds(self.sock, [b'{"spawn":' + message + b"}"], [stdin_r, stdout_w, stderr_w])
        answer: asyncio.Future[tuple[int, asyncio.Future[ExitStatus]]] = self.loop.create_future()
        self.answers.append(answer)
        return answer

    def _answered(self, notice: dict[str, Any]) -> None:
        assert self.loop is not None
        if not self.answers:  # an answer nobody asked for: the server lost its way
            self.shutdown("answered a start nobody asked for")
            return
        answer = self.answers.popleft()
        if "refused" in notice:
            if not answer.done():
                answer.set_exception(SpawnRefused(str(notice["refused"])))
            return
        pid = int(notice["spawned"])
        if answer.done():  # nobody waits any more (the start timed out): end it
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            return
        exited: asyncio.Future[ExitStatus] = self.loop.create_future()
        self.children[pid] = exited  # before any exit notice behind this message
        answer.set_result((pid, exited))

    def _on_message(self) -> None:
        for _ in range(_NOTICE_BATCH):
            try:
                message, fds = recv_fds(self.sock, _MAX_MESSAGE, 1)
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
                self.spares_coming -= 1
                while self.waiters:
                    waiter = self.waiters.popleft()
                    if not waiter.done():
                        waiter.set_result(None)
                        break
                continue
            for fd in fds:
                os.close(fd)
            if "spawned" in notice or "refused" in notice:
                self._answered(notice)
            else:
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
        if self.stopped_check is not None:
            self.stopped_check.cancel()
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
        for pid, future in self.children.items():
            # A spare's child dies with the server; a command (no parent-death signal) is
            # killed here. Not reaped by anyone yet: the group is still the job's.
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            if not future.done() and not future.get_loop().is_closed():
                future.set_result(ExitStatus(None, None))
        self.children.clear()
        for answer in self.answers:
            if not answer.done() and not answer.get_loop().is_closed():
                answer.set_exception(ForkServerError(f"fork server {why}"))
        self.answers.clear()
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

    `spares` forked children wait ready at any time for the built-in worker and for
    commands run as another user, so such a start is one message to one of them (a
    server with none forks one on first need). `preload_worker` imports ingest_worker in
    the server at its start (else when the built-in worker is first used). Call `close()`
    when no child runs any more: its children die with it.
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
            self._spares = max(0, spares)
        if self._server is not None and self._server.alive:
            return
        try:
            self._server = _Server(self._spares, self._preload)
        except (OSError, subprocess.SubprocessError) as exc:
            self._server = None
            raise ForkServerError(f"cannot start the fork server: {exc}") from None

    def _server_on(self, loop: asyncio.AbstractEventLoop) -> _Server:
        """The running server, reading its messages on `loop` (started here if need be)."""
        for _attempt in range(2):
            self.start()
            server = self._server
            assert server is not None
            server.attach(loop)
            if server.alive:
                return server
        raise ForkServerError("the fork server exited at once")

    async def spawn(self, spec: SpawnSpec) -> SpawnedChild:
        """Start one child (OSError, KeyError for an unknown user, ForkServerError,
        SpawnRefused when the command cannot be started)."""
        if spec.argv is not None and not spec.argv:
            raise ValueError("empty command")
        request = spawn_request(spec)
        # A switch of user needs code in the child (a spare); so do limits, unless prlimit(1)
        # is there and would run the program exactly as execve(2) does.
        by_server = spec.argv is not None and spec.user is None and spec.group is None
        if by_server and request["rlimits"]:
            if PRLIMIT is None or not execvp_runs_as_is(request["program"]):
                by_server = False
            else:
                request = through_prlimit(request, PRLIMIT)
        message = json.dumps(request).encode()
        if len(message) > MAX_REQUEST_BYTES:
            raise SpawnRefused(
                f"the command, environment and directory take {len(message)} bytes "
                f"(at most {MAX_REQUEST_BYTES})"
            )
        if by_server:
            launcher: Launcher = "prlimit" if request["program"] == PRLIMIT else "posix_spawn"
            return await self._spawn_command(message, launcher)
        for _attempt in range(3):  # a spare that died just now is replaced
            server = self._server_on(asyncio.get_running_loop())
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
                _, (stdin_w, stdout_r, stderr_r) = with_child_pipes(_sender(sock, message))
            except BaseException as exc:
                sock.close()
                if isinstance(exc, OSError):
                    continue  # the spare died meanwhile: the next one
                raise
            exited = asyncio.get_running_loop().create_future()
            server.children[pid] = exited
            return SpawnedChild(pid, stdin_w, stdout_r, stderr_r, exited=exited, start_report=sock)
        raise ForkServerError("spare children keep dying before their job")

    async def _spawn_command(self, message: bytes, launcher: Launcher) -> SpawnedChild:
        for _attempt in range(2):  # once more, on a new server, if this one is gone
            server = self._server_on(asyncio.get_running_loop())
            try:
                answer, (stdin_w, stdout_r, stderr_r) = with_child_pipes(
                    functools.partial(server.request_spawn, message)
                )
            except OSError:
                server.shutdown("no longer listens")
                continue
            try:
                async with asyncio.timeout(self._spare_timeout_s):
                    pid, exited = await answer
            except BaseException as exc:
                answer.cancel()  # an answer still to come is killed on arrival
                for fd in (stdin_w, stdout_r, stderr_r):
                    os.close(fd)
                if isinstance(exc, TimeoutError):
                    if not server.children:
                        server.shutdown("did not answer in time")
                    raise ForkServerError("the fork server did not answer in time") from None
                raise
            return SpawnedChild(pid, stdin_w, stdout_r, stderr_r, exited=exited, launcher=launcher)
        raise ForkServerError("the fork server keeps exiting")

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown("closed")
            self._server = None


FORK_SERVER = ForkServer()  # the daemon's; `RunnerConfig.fork_server` None means this one


def _forget_after_fork() -> None:
    # A forked copy of this process (a test's fork) must not talk to our server.
    FORK_SERVER._server = None


os.register_at_fork(after_in_child=_forget_after_fork)
