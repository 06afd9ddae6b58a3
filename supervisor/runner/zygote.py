"""Opt-in start mode: fork each job's child from a warm, pre-imported zygote process.

A fresh interpreter per job costs ~20 ms of CPU before the job's first line; the zygote
pays for interpreter start and the ingest_worker imports once and forks from there
(`supervisor.runner.zygote_child` is its whole program). Only the default ingest_worker
command can run this way: the zygote calls `ingest_worker.cli.execute` in the fork, so
`SpawnSpec.argv` is not executed.

Isolation is the exec mode's: each child has called setsid() (its own session and process
group, pgid == pid) before the zygote replies with its pid (a spare forked ahead of
time); it gets the allowlisted environment of the spec (os.environ replaced), the spec's
rlimits and working directory, default signal dispositions and an empty mask, and only
fds 0/1/2. The parent-death chain holds: the zygote has PR_SET_PDEATHSIG(SIGKILL)
towards the daemon, every child towards the zygote. The runner signals children by pgid
and psutil, which needs no parentage.

The zygote reaps its children and sends (pid, wait status, CPU, max RSS) notices that
resolve each `SpawnedChild.exited` here. If the zygote dies, its pending children resolve
with an unknown status (they die with it) and the next spawn starts a new zygote.
Specs with a `user`/`group` go to the exec spawner: the zygote runs as the daemon's user.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import site
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from supervisor.runner.config import _pth_added_paths
from supervisor.runner.env import build_child_env
from supervisor.runner.orphans import ORPHANS
from supervisor.runner.spawner import (
    ExecSpawner,
    ExitStatus,
    SpawnedChild,
    Spawner,
    SpawnSpec,
    _rlimits,
    with_child_pipes,
)

log = logging.getLogger(__name__)

_ZYGOTE_PROGRAM = str(Path(__file__).with_name("zygote_child.py"))
# Runs the zygote program by path on `python -S` with precomputed paths (see config._BOOT):
# importing it as supervisor.runner.zygote_child would load the daemon's packages into it.
_BOOT = (
    "import sys;sys.path[:1]={paths!r};__file__={program!r};"
    "exec(compile(open(__file__).read(),__file__,'exec'))"
)
_MAX_REPLY = 64 * 1024
_NOTICE_BATCH = 256


class ZygoteError(OSError):
    """The zygote could not be started or stopped answering; the job is START_FAILED."""


def _worker_paths() -> list[str]:
    spec = importlib.util.find_spec("ingest_worker")
    if spec is None or not spec.submodule_search_locations:
        raise ZygoteError("ingest_worker is not importable")
    paths = [os.path.dirname(next(iter(spec.submodule_search_locations)))]
    for extra in (*site.getsitepackages(), *_pth_added_paths()):
        if extra not in paths and os.path.isdir(extra):
            paths.append(extra)
    return paths


def _exit_status(status: int, cpu: float, rss: int) -> ExitStatus:
    if os.WIFSIGNALED(status):
        return ExitStatus(None, os.WTERMSIG(status), cpu, rss)
    return ExitStatus(os.waitstatus_to_exitcode(status), None, cpu, rss)


class _ZygoteProcess:
    """One running zygote, bound to the event loop that reads its exit notices."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reply_timeout_s: float) -> None:
        self.loop = loop
        self.children: dict[int, asyncio.Future[ExitStatus]] = {}
        self.alive = True
        control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        notice, notice_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.control, self.notice = control, notice
        # Whatever the daemon holds (Redis URL, service keys) stays out of the zygote.
        env = build_child_env(
            os.environ,
            passthrough=(),
            extra={},
            job_id="zygote",
            attempt=0,
            workdir=tempfile.gettempdir(),
        )
        for name in ("INGEST_JOB_ID", "INGEST_ATTEMPT"):
            env.pop(name, None)
        boot = _BOOT.format(paths=_worker_paths(), program=_ZYGOTE_PROGRAM)
        argv = [sys.executable, "-S", "-c", boot, str(os.getpid())]
        argv += [str(control_child.fileno()), str(notice_child.fileno())]
        try:
            self.proc = subprocess.Popen(  # argv list, never a shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                cwd="/",
                start_new_session=True,
                close_fds=True,
                pass_fds=(control_child.fileno(), notice_child.fileno()),
            )
        except BaseException:
            control.close()
            notice.close()
            raise
        finally:
            control_child.close()
            notice_child.close()
        ORPHANS.owned.add(self.proc.pid)  # waited for in shutdown(), never swept
        control.settimeout(reply_timeout_s)  # covers the zygote's start on first use
        notice.setblocking(False)
        loop.add_reader(notice.fileno(), self._on_notice)
        log.info("zygote %d started", self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, spec: SpawnSpec, fds: list[int]) -> int:
        message = json.dumps(
            {"env": dict(spec.env), "cwd": spec.cwd, "rlimits": _rlimits(spec.limits)}
        ).encode()
        try:
            socket.send_fds(self.control, [message], fds)
            reply = self.control.recv(_MAX_REPLY)
        except OSError as exc:
            self.shutdown("no reply")
            raise ZygoteError(f"zygote did not answer: {exc}") from None
        if not reply:
            self.shutdown("closed its control socket")
            raise ZygoteError("zygote exited")
        answer = json.loads(reply)
        if "error" in answer:
            raise ZygoteError(f"zygote could not fork: {answer['error']}")
        pid = int(answer["pid"])
        self.children[pid] = self.loop.create_future()
        return pid

    def _on_notice(self) -> None:
        for _ in range(_NOTICE_BATCH):
            try:
                message = self.notice.recv(_MAX_REPLY)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self.shutdown("exited")
                return
            notice = json.loads(message)
            future = self.children.pop(int(notice["pid"]), None)
            if future is not None and not future.done():
                future.set_result(
                    _exit_status(int(notice["status"]), float(notice["cpu"]), int(notice["rss"]))
                )

    def shutdown(self, why: str) -> None:
        """Stop the zygote (its children die with it); pending children end unknown."""
        if not self.alive:
            return
        self.alive = False
        if not self.loop.is_closed():
            self.loop.remove_reader(self.notice.fileno())
        self.control.close()
        self.notice.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            log.error("zygote %d survived SIGKILL", self.proc.pid)
        else:
            ORPHANS.owned.discard(self.proc.pid)
        if why != "closed":
            log.warning("zygote %d %s; %d children lost", self.proc.pid, why, len(self.children))
        for future in self.children.values():
            if not future.done():
                future.set_result(ExitStatus(None, None))
        self.children.clear()


class ZygoteSpawner:
    """A `Spawner` that forks children from one lazily started, pre-imported zygote.

    Call `close()` when no child is running any more (the zygote's children die with it).
    """

    def __init__(self, *, reply_timeout_s: float = 10.0, fallback: Spawner | None = None) -> None:
        self._reply_timeout_s = reply_timeout_s
        self._fallback = fallback or ExecSpawner()
        self._zygote: _ZygoteProcess | None = None

    @property
    def zygote_pid(self) -> int | None:
        z = self._zygote
        return z.pid if z is not None and z.alive else None

    def spawn(self, spec: SpawnSpec) -> SpawnedChild:
        if spec.user is not None or spec.group is not None:
            return self._fallback.spawn(spec)
        zygote = self._ensure(asyncio.get_running_loop())
        pid, (stdin_w, stdout_r, stderr_r) = with_child_pipes(
            lambda stdin_r, stdout_w, stderr_w: zygote.request(spec, [stdin_r, stdout_w, stderr_w])
        )
        return SpawnedChild(
            pid=pid,
            pgid=pid,
            stdin_fd=stdin_w,
            stdout_fd=stdout_r,
            stderr_fd=stderr_r,
            exited=zygote.children[pid],
        )

    def _ensure(self, loop: asyncio.AbstractEventLoop) -> _ZygoteProcess:
        zygote = self._zygote
        if zygote is not None and zygote.alive and zygote.loop is loop:
            return zygote
        if zygote is not None:
            zygote.shutdown("closed" if zygote.loop is not loop else "restarting")
        try:
            self._zygote = _ZygoteProcess(loop, self._reply_timeout_s)
        except (OSError, subprocess.SubprocessError) as exc:
            self._zygote = None
            raise ZygoteError(f"cannot start the zygote: {exc}") from None
        return self._zygote

    def close(self) -> None:
        if self._zygote is not None:
            self._zygote.shutdown("closed")
            self._zygote = None
