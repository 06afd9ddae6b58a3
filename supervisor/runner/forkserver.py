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
import functools
import json
import os
import socket
import subprocess
from collections.abc import Callable

from supervisor.runner.forkserver_process import (
    ForkServerError,
    ForkServerLost,
    ForkServerTimeout,
    ServerProcess,
)
from supervisor.runner.spawn import (
    PRLIMIT,
    Launcher,
    SpawnedChild,
    SpawnRefused,
    SpawnSpec,
    execvp_runs_as_is,
    spawn_request,
    through_prlimit,
    with_child_pipes,
)

__all__ = [
    "FORK_SERVER",
    "MAX_REQUEST_BYTES",
    "ForkServer",
    "ForkServerError",
    "ForkServerLost",
    "ForkServerTimeout",
]

# One request is one datagram; the kernel refuses a datagram larger than the socket's send
# buffer (about 200 KiB by default).
MAX_REQUEST_BYTES = 128 * 1024


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
        self._server: ServerProcess | None = None

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
            self._server = ServerProcess(self._spares, self._preload)
        except (OSError, subprocess.SubprocessError) as exc:
            self._server = None
            raise ForkServerError(f"cannot start the fork server: {exc}") from None

    def _server_on(self, loop: asyncio.AbstractEventLoop) -> ServerProcess:
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
                raise ForkServerTimeout("the fork server gave no spare child in time") from None

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
                    raise ForkServerTimeout("the fork server did not answer in time") from None
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
