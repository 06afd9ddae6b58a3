"""The fork server process: every job's child is forked or spawned from here.

Started by `supervisor.runner.forkserver.ForkServer` as `python -P <this file> ...`, run by
path (never `import supervisor...`): it holds the standard library and, once the built-in
worker is in use, `ingest_worker`; nothing of the daemon, and an allowlisted environment.
Single-threaded, so forking it is safe; not dumpable, so a child can neither read it
through /proc nor ptrace it. How each kind of child starts: docs/child-protocol.md.

argv: <daemon pid> <socket fd> <preload 0|1> [<import path>...]. The socket carries
SOCK_SEQPACKET datagrams of JSON. From the daemon: {"want": n, "preload": bool}, fork n
more spares; {"spawn": request} with the job's stdin/stdout/stderr ends, start a command
now (`_spawn_command`). To the daemon: {"spare": pid} with the spare's socket (SCM_RIGHTS)
once the spare is ready; {"spawned": pid} or {"refused": why} answering each spawn, in
order; and exit notices {"pid", "status", "cpu", "rss"} as wait4() reaps children.
"""

from __future__ import annotations

import array
import collections
import contextlib
import ctypes
import ctypes.util
import json
import os
import resource
import select
import signal
import socket
import sys
from typing import Any, NoReturn

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
EXEC_FAILED_CODE = 127
_MAX_MESSAGE = 1 << 20
FORK_RETRY_S = 0.5
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_CATCHABLE = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


def recv_fds(sock: socket.socket, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """One message and the fds passed with it, each close-on-exec (Python 3.11's
    `socket.recv_fds` does not pass its flags on, so it cannot ask for that)."""
    fds = array.array("i")
    message, ancdata, _flags, _addr = sock.recvmsg(
        bufsize, socket.CMSG_LEN(maxfds * fds.itemsize), socket.MSG_CMSG_CLOEXEC
    )
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return message, list(fds)


def _prctl(option: int, value: int | bytes) -> None:
    if _LIBC.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _die_with(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """`sig` when the parent dies; exit now if it already has."""
    _prctl(PR_SET_PDEATHSIG, int(sig))
    if os.getppid() != parent_pid:
        os._exit(EXEC_FAILED_CODE)


def _name(name: bytes) -> None:
    """The name `ps` shows (comm), so the server and its waiting spare are recognisable."""
    with contextlib.suppress(OSError):
        _prctl(PR_SET_NAME, name)


def _reset_signals() -> None:
    """Default dispositions for every signal and an empty mask (ignored ones survive exec)."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for sig in _CATCHABLE:
        if signal.getsignal(sig) is signal.SIG_DFL:  # no syscall needed for these
            continue
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _fail(what: str, exc: OSError, report: socket.socket) -> NoReturn:
    """Tell the daemon why the command never started, on the spare's own socket: no
    command ever holds it (an exec closes it), so none can claim a start failure."""
    with contextlib.suppress(OSError):
        report.send(f"{what}: {exc.strerror or exc}".encode())
    os._exit(EXEC_FAILED_CODE)


def _spare_main(sock: socket.socket, server_pid: int) -> None:
    """In a forked spare: isolate, say ready, wait for one job, run it, never return."""
    try:
        os.setsid()
        _die_with(server_pid)
        _name(b"ingest-spare")
        sock.send(b"ready")
        message, fds = recv_fds(sock, _MAX_MESSAGE, 3)
    except BaseException:  # the server went away before a job came: nothing to say
        os._exit(0)
    if not message:
        os._exit(0)  # the server retired this spare
    code = 70
    try:
        code = _run_job(json.loads(message), fds, server_pid, sock)
    except BaseException:  # never fall back into the server's loop
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    os._exit(code)


def _set_up(
    request: dict[str, Any], fds: list[int], server_pid: int, report: socket.socket
) -> None:
    """The child's state, the same for every command: stdio on the job's pipes and no
    other fd (but `report`, closed on exec), default signals, the limits, the user, the
    job's directory."""
    if len(fds) != 3:
        raise ValueError(f"expected 3 fds, got {len(fds)}")
    for target, fd in enumerate(fds):
        os.dup2(fd, target)  # dup2 makes 0/1/2 inheritable again
    kept = report.fileno()
    os.closerange(3, kept)
    os.closerange(kept + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    _reset_signals()
    try:
        for res, soft, hard in request["rlimits"]:
            resource.setrlimit(res, (soft, hard))
    except (OSError, ValueError) as exc:
        why = exc if isinstance(exc, OSError) else OSError(0, str(exc))
        _fail("resource limit", why, report)
    uid, gid = request["uid"], request["gid"]
    try:
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
    except OSError as exc:
        _fail("switch user", exc, report)
    if uid is not None or gid is not None:
        _die_with(server_pid)  # a change of credentials clears the parent-death signal
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        _fail(f"chdir {request['cwd']}", exc, report)


class SpawnRefused(Exception):
    """A command could not be started; the message says why."""


def _spawn_command(request: dict[str, Any], fds: list[int]) -> int:
    """Start `request`'s command in its own session with `fds` as 0-2; its pid.

    Raises `SpawnRefused` with the reason. Every fd of this process but 0-2 is
    close-on-exec, so the command inherits only its pipes. The daemon sends a command
    with limits as prlimit(1) running it, so the limits hold from its first instruction.
    """
    if len(fds) != 3:
        raise SpawnRefused(f"expected 3 fds, got {len(fds)}")
    cwd, program = request["cwd"], request["program"]
    try:
        os.chdir(cwd)  # posix_spawn has no chdir step here; single-threaded, so safe
    except OSError as exc:
        raise SpawnRefused(f"chdir {cwd}: {exc.strerror or exc}") from None
    try:
        return os.posix_spawn(
            program,
            request["argv"],
            request["env"],
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)],
            setsid=True,
            setsigmask=(),
            setsigdef=_CATCHABLE,
        )
    except OSError as exc:
        raise SpawnRefused(f"exec {program}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:  # NUL bytes, '=' in a name, not strings
        raise SpawnRefused(f"exec {program}: {exc}") from None
    finally:
        os.chdir("/")


def _run_job(
    request: dict[str, Any], fds: list[int], server_pid: int, report: socket.socket
) -> int:
    _set_up(request, fds, server_pid, report)
    argv = request["argv"]
    if argv is not None:
        try:
            os.execve(request["program"], argv, request["env"])
        except OSError as exc:
            _fail(f"exec {request['program']}", exc, report)
    report.close()  # the built-in worker runs in this process: it never holds the socket
    _name(b"ingest-job")
    from ingest_worker.forked import run

    return run(request["env"])


class _Server:
    """Forks spares as the daemon asks for them and passes each one on once it is ready."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock  # to the daemon: requests in; spares and exit notices out
        self.preloaded = False
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # the wakeup fd is the point
        self.starting: dict[int, tuple[int, socket.socket]] = {}  # fd -> (pid, socket)
        self.owed = 0  # spares asked for and not yet forked
        self.children: set[int] = set()  # spares and the jobs they became, until reaped
        # Sessions of recent jobs (a job leads its own): a job's descendants can outlive it.
        self.sessions: collections.deque[int] = collections.deque(maxlen=4096)
        self.ending = False
        # The daemon's death arrives as SIGTERM (the parent-death signal): end the jobs.
        signal.signal(signal.SIGTERM, self._on_term)

    def _on_term(self, _signum: int, _frame: object) -> None:
        self.ending = True

    def serve(self) -> None:
        """Serve until the daemon is gone, however that shows first (its parent-death
        SIGTERM, its end of the socket closed, or reset with a message of ours unread),
        then end every job."""
        try:
            while True:
                fds = [self.sock.fileno(), self.wake_r, *self.starting]
                # Spares still owed (fork failed: out of processes for now) are retried
                # soon, not only on the next message or child exit.
                ready, _, _ = select.select(fds, [], [], FORK_RETRY_S if self.owed else None)
                if self.wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 4096):
                            pass
                if self.ending or (self.sock.fileno() in ready and not self._handle_request()):
                    return
                for fd in ready:
                    if fd in self.starting:
                        self._pass_on(fd)
                self._fork_owed()
                self._reap()
        except ConnectionError:  # only the daemon's socket raises it: the daemon is gone
            return
        finally:
            self._end_jobs()

    def _handle_request(self) -> bool:
        """{"spawn": request} with 3 fds: start a command now and answer. {"want": n,
        "preload": bool}: fork n more spares (importing the worker first)."""
        message, fds = recv_fds(self.sock, _MAX_MESSAGE, 3)
        if not message:
            for fd in fds:
                os.close(fd)
            return False  # the daemon closed the socket: children die with us
        request = json.loads(message)
        if "spawn" in request:
            self._spawn(request["spawn"], fds)
            return True
        for fd in fds:
            os.close(fd)
        if request.get("preload") and not self.preloaded:
            self._preload()
        self.owed += int(request.get("want", 0))
        return True

    def _spawn(self, request: dict[str, Any], fds: list[int]) -> None:
        try:
            pid = _spawn_command(request, fds)
        except (SpawnRefused, KeyError) as exc:  # never the server's end: one start fails
            answer: dict[str, Any] = {"refused": str(exc)}
        else:
            self.children.add(pid)
            self.sessions.append(pid)
            answer = {"spawned": pid}
        finally:
            for fd in fds:
                os.close(fd)
        self.sock.send(json.dumps(answer).encode())

    def _fork_owed(self) -> None:
        while self.owed > 0:
            try:
                pid, sock = self._fork_spare()
            except OSError:  # out of processes for now: try again on the next wake-up
                return
            self.owed -= 1
            self.starting[sock.fileno()] = (pid, sock)

    def _pass_on(self, fd: int) -> None:
        """The spare said it is ready (or died): hand its socket to the daemon."""
        pid, sock = self.starting.pop(fd)
        try:
            if sock.recv(16) == b"ready":
                notice = json.dumps({"spare": pid}).encode()
                socket.send_fds(self.sock, [notice], [sock.fileno()])
            else:
                self.owed += 1  # it died before it was ready: fork another
        except OSError:
            self.owed += 1
        finally:
            sock.close()

    def _preload(self) -> None:
        self.preloaded = True
        try:
            from ingest_worker.forked import preload

            preload()
        except Exception:  # each child imports it again and reports the error itself
            import traceback

            traceback.print_exc()

    def _fork_spare(self) -> tuple[int, socket.socket]:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        server_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            # Only the spare's own socket stays open; the server's would hide its death.
            for sock in (self.sock, mine, *(s for _p, s in self.starting.values())):
                os.close(sock.detach())
            os.close(self.wake_r)
            os.close(self.wake_w)
            _spare_main(theirs, server_pid)
        theirs.close()
        self.children.add(pid)
        self.sessions.append(pid)
        return pid, mine

    def _end_jobs(self) -> None:
        """The daemon is gone: kill every job with all it started. A job's first process
        would die with this server anyway (its parent-death signal); what it started
        would not, and no daemon is left to sweep it up. That is everything in the jobs'
        sessions, and every descendant of a job whatever session it made for itself
        (stopped first, so none forks past the look)."""
        sessions = set(self.children) | set(self.sessions)
        doomed: set[int] = set()
        for _ in range(3):  # until a look finds nothing new: each found process is stopped
            found = _job_processes(self.children, sessions) - doomed
            if not found:
                break
            for pid in found:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGSTOP)
            doomed |= found
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        for pid in doomed:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            notice = {
                "pid": pid,
                "status": status,
                "cpu": usage.ru_utime + usage.ru_stime,
                "rss": usage.ru_maxrss * 1024,
            }
            self.sock.send(json.dumps(notice).encode())


def _job_processes(roots: set[int], sessions: set[int]) -> set[int]:
    """Processes in one of `sessions`, and every descendant of one of `roots` or of those
    (by parent, through /proc), this server excluded."""
    parent_of: dict[int, int] = {}
    members: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parent_of[pid] = int(fields[1])  # after the command: state, ppid, pgrp, session
        if int(fields[3]) in sessions:
            members.add(pid)
    below: dict[int, list[int]] = collections.defaultdict(list)
    for pid, parent in parent_of.items():
        below[parent].append(pid)
    found = set(members)
    stack = [*roots, *members]
    while stack:
        for child in below.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    found.discard(os.getpid())
    return found


def main(argv: list[str]) -> None:
    daemon_pid, sock_fd, preload = (int(a) for a in argv[1:4])
    _die_with(daemon_pid, signal.SIGTERM)
    _prctl(PR_SET_DUMPABLE, 0)
    # No core file from here or from any child: a parser crashing on a tenant's document
    # must not leave that document on disk (systemd-coredump keeps cores). Held by the
    # server, the limit is every child's from its first instruction, with nothing to set.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _name(b"ingest-forksrv")
    sys.path[:0] = argv[4:]
    os.set_inheritable(sock_fd, False)  # passed to us inheritable; no command may get it
    server = _Server(socket.socket(fileno=sock_fd))
    if preload:
        server._preload()
    server.serve()


if __name__ == "__main__":
    main(sys.argv)
