"""Starting a child: the one way, through a fork server (`forkserver_main` is its program).

The daemon starts the fork server once (its own session, the children's allowlisted
environment, parent-death signal towards the daemon) and asks it for every child. The
server forks a spare ahead of time; the spare leads its own session and process group,
dies with the server, and on request takes the job's pipes as 0/1/2, closes every other
fd, resets signal dispositions and mask, applies the resource limits, switches user if
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
import errno
import grp
import importlib.util
import json
import logging
import os
import pwd
import resource
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from supervisor.runner.config import ResourceLimits
from supervisor.runner.containment import ORPHANS
from supervisor.runner.env import build_child_env

log = logging.getLogger(__name__)

T = TypeVar("T")
_PROGRAM = str(Path(__file__).with_name("forkserver_main.py"))
_MAX_MESSAGE = 64 * 1024
_NOTICE_BATCH = 256


@dataclass(frozen=True)
class SpawnSpec:
    argv: Sequence[str] | None  # None: the built-in ingest_worker, run in the forked child
    env: Mapping[str, str]
    cwd: str
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    user: str | None = None
    group: str | None = None


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int | None
    signal: int | None
    cpu_s: float = 0.0  # the child and every descendant it waited for
    max_rss_bytes: int = 0  # largest single process among them


@dataclass
class SpawnedChild:
    pid: int  # also its process group and session id
    # Parent ends of the pipes, non-blocking, owned (and closed) by the caller.
    stdin_fd: int
    stdout_fd: int
    stderr_fd: int
    exited: asyncio.Future[ExitStatus]  # resolved once the child is reaped


class ForkServerError(OSError):
    """The fork server could not be started or stopped answering: a start failure."""


def rlimits(limits: ResourceLimits) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) to set in the child."""
    out: list[tuple[int, int, int]] = []
    if limits.memory_bytes is not None:
        out.append((resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes))
    if limits.cpu_seconds is not None:
        # A catchable SIGXCPU at the soft limit, SIGKILL a second later.
        out.append((resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1))
    if limits.open_files is not None:
        out.append((resource.RLIMIT_NOFILE, limits.open_files, limits.open_files))
    if limits.processes is not None:
        out.append((resource.RLIMIT_NPROC, limits.processes, limits.processes))
    if not limits.core_dumps:
        out.append((resource.RLIMIT_CORE, 0, 0))
    return out


def credentials(user: str | None, group: str | None) -> tuple[int | None, int | None]:
    """(uid, gid) to switch to; KeyError for an unknown name."""
    gid = None if group is None else grp.getgrnam(group).gr_gid
    if user is None:
        return None, gid
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid if gid is None else gid


def resolve_program(program: str, env: Mapping[str, str], cwd: str) -> str:
    """The absolute path that will be executed; FileNotFoundError when there is none."""
    if os.sep in program:
        path = os.path.join(cwd, program)  # relative paths resolve against the child's cwd
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "not found or not executable", program)
        return path
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "not found on PATH", program)
    return os.path.abspath(found)


def with_child_pipes(start: Callable[[int, int, int], T]) -> tuple[T, tuple[int, int, int]]:
    """Make stdin/stdout/stderr pipes and run `start` with the child's ends.

    The child's ends are always closed here. The parent's ends (stdin_w, stdout_r,
    stderr_r) are closed if `start` fails, else returned non-blocking with its result.
    """
    stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
    stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
    stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
    parent_ends = (stdin_w, stdout_r, stderr_r)
    try:
        started = start(stdin_r, stdout_w, stderr_w)
    except BaseException:
        for fd in parent_ends:
            os.close(fd)
        raise
    finally:
        for fd in (stdin_r, stdout_w, stderr_w):
            os.close(fd)
    for fd in parent_ends:
        os.set_blocking(fd, False)
    return started, parent_ends


def _import_paths() -> list[str]:
    """Where the daemon found ingest_worker, first on the server's path (a source tree)."""
    spec = importlib.util.find_spec("ingest_worker")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [os.path.dirname(next(iter(spec.submodule_search_locations)))]


def _exit_status(status: int, cpu: float, rss: int) -> ExitStatus:
    if os.WIFSIGNALED(status):
        return ExitStatus(None, os.WTERMSIG(status), cpu, rss)
    return ExitStatus(os.waitstatus_to_exitcode(status), None, cpu, rss)


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
            status = _exit_status(int(notice["status"]), float(notice["cpu"]), int(notice["rss"]))
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


def _request(spec: SpawnSpec) -> bytes:
    """The job's set-up for the spare (raises before any spare is taken)."""
    argv = None if spec.argv is None else list(spec.argv)
    program = None if argv is None else resolve_program(argv[0], spec.env, spec.cwd)
    uid, gid = credentials(spec.user, spec.group)
    return json.dumps(
        {
            "argv": argv,
            "program": program,
            "env": dict(spec.env),
            "cwd": spec.cwd,
            "rlimits": rlimits(spec.limits),
            "uid": uid,
            "gid": gid,
        }
    ).encode()


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

    def start(self, *, preload_worker: bool | None = None) -> None:
        """Start the server now if it is not running (raises ForkServerError)."""
        if preload_worker is not None:
            self._preload = preload_worker
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
        message = _request(spec)
        for _attempt in range(3):  # a spare that died just now is replaced
            self.start()
            server = self._server
            assert server is not None
            server.attach(asyncio.get_running_loop())
            try:
                async with asyncio.timeout(self._spare_timeout_s):
                    pid, sock = await server.take_spare(builtin=spec.argv is None)
            except TimeoutError:
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
