"""What starting one child takes: its spec, its pipes, its limits, user and program, and
the record of how it exited. Used by `forkserver`, which does the starting."""

from __future__ import annotations

import asyncio
import errno
import grp
import os
import pwd
import resource
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from supervisor.runner.config import ResourceLimits
from supervisor.runner.forkserver_main import EXEC_FAILED_CODE

T = TypeVar("T")


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


# What ran first in the child: the command itself, prlimit(1), or a spare's set-up.
Launcher = Literal["posix_spawn", "prlimit", "spare"]


@dataclass
class SpawnedChild:
    pid: int  # also its process group and session id
    # Parent ends of the pipes, non-blocking, owned (and closed) by the caller.
    stdin_fd: int
    stdout_fd: int
    stderr_fd: int
    exited: asyncio.Future[ExitStatus]  # resolved once the child is reaped
    launcher: Launcher = "spare"
    # A spare's socket, owned (and closed) by the caller: the spare says on it why it could
    # not start the command; a successful exec closes the spare's end unread.
    start_report: socket.socket | None = None


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


def exit_status(status: int, cpu: float, rss: int) -> ExitStatus:
    if os.WIFSIGNALED(status):
        return ExitStatus(None, os.WTERMSIG(status), cpu, rss)
    return ExitStatus(os.waitstatus_to_exitcode(status), None, cpu, rss)


class SpawnRefused(OSError):
    """The fork server could not start the command; the message says why."""


# util-linux's prlimit(1) sets limits on itself and then execs the command: the limits
# hold from the command's first instruction, and in everything it forks.
PRLIMIT = shutil.which("prlimit", path="/usr/bin:/bin")
_PRLIMIT_OPTIONS = {
    resource.RLIMIT_AS: "--as",
    resource.RLIMIT_CPU: "--cpu",
    resource.RLIMIT_NOFILE: "--nofile",
    resource.RLIMIT_NPROC: "--nproc",
}


def through_prlimit(request: dict[str, Any], prlimit: str) -> dict[str, Any]:
    """`request` (a command's, from `spawn_request`) as `prlimit` setting its limits and
    then executing it. The command gets its resolved path as argv[0]."""
    options = []
    for res, soft, hard in request["rlimits"]:
        values = ["unlimited" if v == resource.RLIM_INFINITY else str(v) for v in (soft, hard)]
        options.append(f"{_PRLIMIT_OPTIONS[res]}={values[0]}:{values[1]}")
    argv = ["prlimit", *options, "--", request["program"], *request["argv"][1:]]
    return {**request, "program": prlimit, "argv": argv, "rlimits": []}


def execvp_runs_as_is(program: str) -> bool:
    """True for an ELF binary or a `#!` script. prlimit(1) starts its command with
    execvp(3), which runs any other file through /bin/sh where execve(2) would fail."""
    try:
        with open(program, "rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head == b"\x7fELF" or head.startswith(b"#!")


def start_error(exc: BaseException, argv: tuple[str, ...] | None) -> str:
    """Why a child could not be started, as the job's error says it."""
    program = "ingest_worker" if argv is None else argv[0] if argv else "?"
    if isinstance(exc, SpawnRefused):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"{program}: not found"
    if isinstance(exc, PermissionError):
        return f"{program}: permission denied"
    return f"{type(exc).__name__}: {exc}"[:300]


def start_failure(child: SpawnedChild, exit_code: int | None) -> str | None:
    """Why a spare never ran its command, or None. Only the spare can say so, on its own
    socket: what a command prints and its exit code decide nothing (a start failure
    pauses every slot of the daemon, whatever the tenant). prlimit(1)'s refusals are not
    told apart: a command can print the same words, so a limit prlimit cannot set fails
    the job as a command's failure, with prlimit's text."""
    if child.start_report is None or exit_code != EXEC_FAILED_CODE:
        return None
    try:
        why = child.start_report.recv(4096, socket.MSG_DONTWAIT)
    except OSError:  # nothing said (the command ran), or the socket is gone
        return None
    return why.decode("utf-8", errors="replace") or None


def spawn_request(spec: SpawnSpec) -> dict[str, Any]:
    """The job's set-up for the fork server or a spare (raises before either is asked)."""
    argv = None if spec.argv is None else list(spec.argv)
    program = None if argv is None else resolve_program(argv[0], spec.env, spec.cwd)
    uid, gid = credentials(spec.user, spec.group)
    return {
        "argv": argv,
        "program": program,
        "env": dict(spec.env),
        "cwd": spec.cwd,
        "rlimits": rlimits(spec.limits),
        "uid": uid,
        "gid": gid,
    }
