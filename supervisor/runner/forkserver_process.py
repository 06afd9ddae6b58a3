"""The daemon's side of one running fork server process (`forkserver_main` is its program).

`ServerProcess` starts the process, keeps its waiting spares and the spawn answers and
exit notices it still owes, and resolves them from the server's messages; `ForkServer`
(in `forkserver`) decides when to start, use and replace one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from supervisor.runner.containment import ORPHANS
from supervisor.runner.env import inherited_env
from supervisor.runner.forkserver_main import recv_fds
from supervisor.runner.spawn import ExitStatus, SpawnRefused, exit_status
from supervisor.runner.stopped import continue_if_stopped

log = logging.getLogger(__name__)

_PROGRAM = str(Path(__file__).with_name("forkserver_main.py"))
_MAX_MESSAGE = 64 * 1024
_NOTICE_BATCH = 256
# How often the daemon looks whether its server or a spare was stopped (see stopped.py).
STOPPED_CHECK_S = 1.0


class ForkServerError(OSError):
    """The fork server could not be started or stopped answering: a start failure."""


class ForkServerTimeout(ForkServerError):
    """The fork server gave no answer or spare in time: stopped (by a child beside the
    job, perhaps) or overwhelmed. The host's trouble, not the job's."""


class ForkServerLost(ForkServerError):
    """The fork server died while a start waited on it (killed, perhaps by a child beside
    the job). The host's trouble, not the job's; what it may have started before it died
    is an orphan of the daemon's."""


def _import_paths() -> list[str]:
    """Where the daemon found ingest_worker, first on the server's path (a source tree)."""
    spec = importlib.util.find_spec("ingest_worker")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [os.path.dirname(next(iter(spec.submodule_search_locations)))]


class ServerProcess:
    """One running fork server process, as the daemon sees it: its socket (read on one
    event loop), its waiting spares, the answers and exits it still owes."""

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
        # It has handed over a spare or answered a start: one that dies before ever doing
        # so is a broken deploy (a plain start failure), not a host's passing trouble.
        self.served = False
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
                raise (ForkServerLost if self.served else ForkServerError)("fork server exited")
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
                self.served = True
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
                self.served = True
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
        died: type[ForkServerError] = ForkServerLost if self.served else ForkServerError
        for answer in self.answers:
            if not answer.done() and not answer.get_loop().is_closed():
                answer.set_exception(died(f"fork server {why}"))
        self.answers.clear()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)  # take_spare() sees the server gone
        self.waiters.clear()
