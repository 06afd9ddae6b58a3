"""Starting a child: the Spawner interface and the fork/exec implementation.

run_child only needs a pid, three pipe ends and a future that resolves with the exit
status. A later start mode (fork from a warm, pre-imported zygote) implements the same
`Spawner` and hands back the same `SpawnedChild`.

The child-side setup (parent-death signal, resource limits, signal dispositions and mask)
runs in a small compiled exec shim (see `shim`), so Popen keeps its vfork() fast path.
Without a C compiler it falls back to preexec_fn: the function only issues syscalls
(prctl, getppid, setrlimit, sigaction, sigprocmask) on values prepared before the fork,
and CPython re-initialises its own locks in the child before calling it; the price is
fork() instead of vfork(), measured in bench/bench_runner.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import grp
import os
import pwd
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from supervisor.runner.config import ResourceLimits
from supervisor.runner.orphans import ORPHANS
from supervisor.runner.prctl import PR_SET_PDEATHSIG, PRCTL
from supervisor.runner.shim import default_shim, encode_limits

T = TypeVar("T")


@dataclass(frozen=True)
class SpawnSpec:
    argv: Sequence[str]
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
    pid: int
    pgid: int  # the child leads its own session and process group
    # Parent ends of the pipes, non-blocking, owned (and closed) by the caller.
    stdin_fd: int
    stdout_fd: int
    stderr_fd: int
    exited: asyncio.Future[ExitStatus]  # resolved once the child is reaped


class Spawner(Protocol):
    def spawn(self, spec: SpawnSpec) -> SpawnedChild:
        """Start the child or raise OSError / subprocess.SubprocessError."""
        ...


_CATCHABLE = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


def _rlimits(limits: ResourceLimits) -> list[tuple[int, int, int]]:
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


def _make_child_setup(limits: ResourceLimits) -> Callable[[], None]:
    parent_pid = os.getpid()
    rlimits = _rlimits(limits)
    prctl = PRCTL

    def setup() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
            if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
                os._exit(127)
        for res, soft, hard in rlimits:
            resource.setrlimit(res, (soft, hard))
        for sig in _CATCHABLE:
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())

    return setup


class ExecSpawner:
    """fork + exec of argv (never a shell) in a new session, exit watched through a pidfd.

    shim: "auto" builds/uses the compiled exec shim, a path uses that shim, None always
    uses preexec_fn.
    """

    def __init__(self, shim: str | None = "auto") -> None:
        self._shim = shim

    @property
    def shim_path(self) -> str | None:
        return default_shim() if self._shim == "auto" else self._shim

    def spawn(self, spec: SpawnSpec) -> SpawnedChild:
        loop = asyncio.get_running_loop()
        argv = list(spec.argv)
        if not argv:
            raise ValueError("empty command")
        program = _resolve_program(argv[0], spec.env, spec.cwd)
        shim = self.shim_path
        global _posix_spawn_ok
        popen: subprocess.Popen[bytes] | None = None
        spawned: tuple[int, tuple[int, int, int]] | None = None
        if shim is not None and spec.user is None and spec.group is None and _posix_spawn_ok:
            # The shim changes directory and closes fds itself, so posix_spawn can start
            # it: what Popen does besides costs ~50 us of the event loop per child.
            limits = encode_limits(_rlimits(spec.limits))
            shim_argv = [shim, str(os.getpid()), limits, spec.cwd, "--", program, *argv]
            try:
                spawned = with_child_pipes(
                    lambda stdin_r, stdout_w, stderr_w: _posix_spawn(
                        shim, shim_argv, spec.env, (stdin_r, stdout_w, stderr_w)
                    )
                )
            except NotImplementedError:  # a C library without POSIX_SPAWN_SETSID
                _posix_spawn_ok = False
        if spawned is not None:
            pid, fds = spawned
        else:
            popen, fds = self._popen(spec, program, argv, shim)
            pid = popen.pid
        exited: asyncio.Future[ExitStatus] = loop.create_future()
        ORPHANS.owned.add(pid)  # reaped below, never by the orphan sweeper
        pidfd = os.pidfd_open(pid)

        def on_exit() -> None:
            try:
                reaped, status, usage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: status unknown
                status, usage = -1, None
            else:
                if reaped == 0:
                    return  # spurious wake-up; not yet a zombie
            loop.remove_reader(pidfd)
            os.close(pidfd)
            ORPHANS.owned.discard(pid)
            if popen is not None:
                popen.returncode = status  # so Popen never waits on a reaped pid
            if not exited.done():
                exited.set_result(_exit_status(status, usage))

        loop.add_reader(pidfd, on_exit)
        stdin_w, stdout_r, stderr_r = fds
        return SpawnedChild(
            pid=pid,
            pgid=pid,
            stdin_fd=stdin_w,
            stdout_fd=stdout_r,
            stderr_fd=stderr_r,
            exited=exited,
        )

    def _popen(
        self, spec: SpawnSpec, program: str, argv: list[str], shim: str | None
    ) -> tuple[subprocess.Popen[bytes], tuple[int, int, int]]:
        """The fork path: a user/group switch (with the shim) or no shim (preexec_fn)."""
        preexec: Callable[[], None] | None = None
        if shim is not None:
            limits = encode_limits(_rlimits(spec.limits))
            argv = [shim, str(os.getpid()), limits, "-", "--", program, *argv]
        else:
            preexec = _make_child_setup(spec.limits)
        user = spec.user
        group: int | None = None if spec.group is None else grp.getgrnam(spec.group).gr_gid
        extra_groups: list[int] | None = None
        if user is not None:
            extra_groups = []  # drop the supervisor's supplementary groups
            if group is None:
                group = pwd.getpwnam(user).pw_gid
        # Pipes made here, not by Popen, so the parent ends are plain fds this module owns.
        return with_child_pipes(
            lambda stdin_r, stdout_w, stderr_w: subprocess.Popen(  # argv list, never a shell
                argv,
                stdin=stdin_r,
                stdout=stdout_w,
                stderr=stderr_w,
                cwd=spec.cwd,
                env=dict(spec.env),
                start_new_session=True,
                close_fds=True,
                preexec_fn=preexec,  # only without the shim; see the module docstring
                user=user,
                group=group,
                extra_groups=extra_groups,
            )
        )


def _posix_spawn(
    shim: str, argv: list[str], env: Mapping[str, str], stdio: tuple[int, int, int]
) -> int:
    """Start the shim in its own session with the pipes as 0/1/2 and no signal blocked.

    glibc's posix_spawn uses clone(CLONE_VM | CLONE_VFORK) and reports a failed exec as
    an OSError here, as Popen does.
    """
    if min(stdio) < 3:  # the supervisor runs with 0-2 closed: dup2 onto them could clash
        stdio = tuple(_dup_above_2(fd) for fd in stdio)  # type: ignore[assignment]
        try:
            return _posix_spawn(shim, argv, env, stdio)
        finally:
            for fd in stdio:
                os.close(fd)
    actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(stdio)]
    return os.posix_spawn(shim, argv, env, file_actions=actions, setsid=True, setsigmask=())


_posix_spawn_ok = True  # False after a C library without POSIX_SPAWN_SETSID said so


def _dup_above_2(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


def with_child_pipes(
    start: Callable[[int, int, int], T],
) -> tuple[T, tuple[int, int, int]]:
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


def _resolve_program(program: str, env: Mapping[str, str], cwd: str) -> str:
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


def _exit_status(status: int, usage: resource.struct_rusage | None) -> ExitStatus:
    cpu = (usage.ru_utime + usage.ru_stime) if usage is not None else 0.0
    rss = int(usage.ru_maxrss) * 1024 if usage is not None else 0
    if status < 0:
        return ExitStatus(None, None, cpu, rss)
    if os.WIFSIGNALED(status):
        return ExitStatus(None, os.WTERMSIG(status), cpu, rss)
    return ExitStatus(os.waitstatus_to_exitcode(status), None, cpu, rss)
