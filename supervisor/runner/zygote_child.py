"""The zygote process itself: a pre-imported interpreter that forks one child per job.

Started by `supervisor.runner.zygote.ZygoteSpawner` as `python -S -c <boot>` which runs this
file by path (never `import supervisor...`): the zygote holds only the standard library
and ingest_worker, so forked children carry nothing of the daemon.

argv: <daemon pid> <control fd> <notice fd>. Control messages are SOCK_SEQPACKET datagrams
of JSON; a spawn request carries the child's stdin/stdout/stderr ends via SCM_RIGHTS.
Replies ({"pid": n} or {"error": text}) go back on the control socket; exit notices
({"pid", "status", "cpu", "rss"}) on the notice socket, as wait4() reaps children (spares
that never got a job included: the daemon ignores pids it was never given).

A request is served by a spare child forked ahead of time: it has already called setsid()
and set its parent-death signal, so the reply is immediate and its pid is a process group
the daemon can signal at once. Waiting for a fresh fork to reach setsid() instead cost
~2 ms per job of the daemon's event loop (blocked in the synchronous `Spawner.spawn`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import io
import json
import os
import resource
import select
import signal
import socket
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
_MAX_MESSAGE = 1 << 20
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_CATCHABLE = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


def _die_with(parent_pid: int) -> None:
    """SIGKILL when the parent dies; exit now if it already has."""
    _LIBC.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(127)


def _reset_signals() -> None:
    """The dispositions a freshly exec'd interpreter would have, and an empty mask."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for sig in _CATCHABLE:
        # getsignal() knows every disposition (inherited ones are read at start-up) and
        # costs no syscall: skipping the default ones saves ~0.6 ms per child.
        if signal.getsignal(sig) is signal.SIG_DFL:
            continue
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            signal.signal(sig, signal.SIG_DFL)
    # What CPython itself installs at start-up.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _spare_main(sock: socket.socket, zygote_pid: int) -> None:
    """In a forked spare: isolate, say ready, wait for one job, run it, never return."""
    code = 70
    try:
        os.setsid()
        _die_with(zygote_pid)
        sock.send(b"ready")
        message, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, 3)
        if not message:
            os._exit(0)  # the zygote retired this spare
        sock.close()
        code = _run_job(json.loads(message), fds)
    except BaseException:  # never fall back into the zygote's loop
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    os._exit(code)


def _run_job(request: dict[str, Any], fds: list[int]) -> int:
    if len(fds) != 3:
        raise ValueError(f"expected 3 fds, got {len(fds)}")
    _reset_signals()
    for res, soft, hard in request["rlimits"]:
        resource.setrlimit(res, (soft, hard))
    os.chdir(request["cwd"])
    for target, fd in enumerate(fds):
        os.dup2(fd, target)  # dup2 makes 0/1/2 inheritable again
    os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.environ.clear()
    os.environ.update(request["env"])
    stdin = io.FileIO(0, "r", closefd=False)
    # Unbuffered text like `python -u`: PROGRESS lines reach the supervisor as printed.
    out = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        write_through=True,
    )
    sys.stdin = io.TextIOWrapper(io.BufferedReader(stdin), encoding="utf-8")
    sys.stdout, sys.stderr = out, err
    from ingest_worker.cli import execute

    try:
        code = execute(stdin.read(), os.environ, out, err)
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    with contextlib.suppress(Exception):
        out.flush()
        err.flush()
    return code


class _Spare:
    """A forked child that already leads its own session, waiting for a job."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.ready = False

    def wait_ready(self) -> bool:
        if not self.ready:
            self.ready = self.sock.recv(16) == b"ready"  # b"" when it died first
        return self.ready

    def close(self) -> None:
        self.sock.close()


class _Zygote:
    """Serves spawn requests from a spare forked ahead of time.

    The spare calls setsid() and sets its parent-death signal while the zygote waits for
    the next request, so the reply (its pid) is both immediate and safe to killpg.
    """

    def __init__(self, control: socket.socket, notice: socket.socket) -> None:
        self.control = control
        self.notice = notice
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # the wakeup fd is the point
        self.spare: _Spare | None = None

    def serve(self) -> None:
        self.spare = self._fork_spare()
        while True:
            control = self.control.fileno()
            ready, _, _ = select.select([control, self.wake_r], [], [])
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 4096):
                        pass
            if control in ready and not self._handle_request():
                return
            self._reap()

    def _handle_request(self) -> bool:
        message, fds, _flags, _addr = socket.recv_fds(self.control, _MAX_MESSAGE, 3)
        if not message:
            return False  # the daemon closed the socket: children die with us
        reply: dict[str, object]
        try:
            reply = {"pid": self._hand_over(message, fds)}
        except OSError as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            # Before the next fork: a spare holding these would keep the job's pipes open.
            for fd in fds:
                os.close(fd)
        self.control.send(json.dumps(reply).encode())
        try:
            self.spare = self._fork_spare()
        except OSError:  # out of processes for now: the next request tries again, or fails
            self.spare = None
        return True

    def _hand_over(self, message: bytes, fds: list[int]) -> int:
        for _attempt in range(2):  # a spare that died meanwhile is replaced once
            spare = self.spare or self._fork_spare()
            self.spare = None
            try:
                if spare.wait_ready():
                    socket.send_fds(spare.sock, [message], fds)
                    return spare.pid
            except OSError:
                pass
            finally:
                spare.close()
        raise OSError("spare children keep dying before their job")

    def _fork_spare(self) -> _Spare:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zygote_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            # Only the spare's own socket stays open; the zygote's would hide its death.
            for sock in (self.control, self.notice, mine):
                os.close(sock.detach())
            os.close(self.wake_r)
            os.close(self.wake_w)
            _spare_main(theirs, zygote_pid)
        theirs.close()
        return _Spare(pid, mine)

    def _reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            notice = {
                "pid": pid,
                "status": status,
                "cpu": usage.ru_utime + usage.ru_stime,
                "rss": usage.ru_maxrss * 1024,
            }
            self.notice.send(json.dumps(notice).encode())


def main(argv: list[str]) -> None:
    daemon_pid, control_fd, notice_fd = (int(a) for a in argv[1:4])
    _die_with(daemon_pid)
    control = socket.socket(fileno=control_fd)
    notice = socket.socket(fileno=notice_fd)
    # Pay for the worker's imports once, here; every child inherits them.
    import ingest_worker.cli
    import ingest_worker.config
    import ingest_worker.job
    import ingest_worker.pipeline  # noqa: F401

    zygote = _Zygote(control, notice)
    gc.collect()
    gc.freeze()  # keep the shared heap out of the children's collections (fewer COW copies)
    zygote.serve()


if __name__ == "__main__":
    main(sys.argv)
