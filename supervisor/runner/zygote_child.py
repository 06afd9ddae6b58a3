"""The zygote process itself: a pre-imported interpreter that forks one child per job.

Started by `supervisor.runner.zygote.ZygoteSpawner` as `python -S -c <boot>` which runs this
file by path (never `import supervisor...`): the zygote holds only the standard library
and ingest_worker, so forked children carry nothing of the daemon.

argv: <daemon pid> <control fd> <notice fd>. Control messages are SOCK_SEQPACKET datagrams
of JSON; a spawn request carries the child's stdin/stdout/stderr ends via SCM_RIGHTS.
Replies ({"pid": n} or {"error": text}) go back on the control socket; exit notices
({"pid", "status", "cpu", "rss"}) on the notice socket, as wait4() reaps children.
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


def _run_child(request: dict[str, object], fds: list[int], ready_w: int, zygote_pid: int) -> None:
    """In the forked child: isolate, wire the pipes, run the job, never return."""
    code = 70
    try:
        os.setsid()
        _die_with(zygote_pid)
        os.write(ready_w, b"!")
        _reset_signals()
        for res, soft, hard in request["rlimits"]:  # type: ignore[attr-defined]
            resource.setrlimit(res, (soft, hard))
        os.chdir(str(request["cwd"]))
        for target, fd in enumerate(fds):
            os.dup2(fd, target)  # dup2 makes 0/1/2 inheritable again
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        env: dict[str, str] = request["env"]  # type: ignore[assignment]
        os.environ.clear()
        os.environ.update(env)
        stdin = io.FileIO(0, "r", closefd=False)
        # Unbuffered text like `python -u`: PROGRESS lines reach the supervisor as printed.
        out = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True
        )
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
    except BaseException:  # never fall back into the zygote's loop
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    os._exit(code)


class _Zygote:
    def __init__(self, control: socket.socket, notice: socket.socket) -> None:
        self.control = control
        self.notice = notice
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)  # the wakeup fd is the point

    def serve(self) -> None:
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
            request = json.loads(message)
            if len(fds) != 3:
                raise ValueError(f"expected 3 fds, got {len(fds)}")
            reply = {"pid": self._fork(request, fds)}
        except (OSError, ValueError) as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        self.control.send(json.dumps(reply).encode())
        return True

    def _fork(self, request: dict[str, object], fds: list[int]) -> int:
        ready_r, ready_w = os.pipe()
        zygote_pid = os.getpid()
        try:
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                self.control.detach()
                self.notice.detach()
                _run_child(request, fds, ready_w, zygote_pid)
            os.close(ready_w)
            ready_w = -1
            # Reply only once the child leads its own group, so the daemon can killpg it.
            os.read(ready_r, 1)
            return pid
        finally:
            os.close(ready_r)
            if ready_w >= 0:
                os.close(ready_w)

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
