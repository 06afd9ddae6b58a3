"""How children are started: the runner's frozen settings and the default child command."""

from __future__ import annotations

import functools
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from supervisor.runner.env import inherited_env

if TYPE_CHECKING:
    from supervisor.runner.forkserver import ForkServer


@dataclass(frozen=True)
class ResourceLimits:
    """Kernel limits set in the child before exec; None leaves the supervisor's own value.
    No child writes a core file whatever these say: the fork server holds RLIMIT_CORE 0.

    `processes` is RLIMIT_NPROC, which the kernel counts per user, not per child: only
    meaningful together with a dedicated `user`.
    """

    memory_bytes: int | None = None  # RLIMIT_AS: allocations beyond it fail (MemoryError)
    cpu_seconds: int | None = None  # RLIMIT_CPU: SIGXCPU, then SIGKILL at the hard limit
    open_files: int | None = None  # RLIMIT_NOFILE
    processes: int | None = None  # RLIMIT_NPROC


@dataclass(frozen=True)
class RunnerConfig:
    """How one kind of child is started. The environment children inherit from this
    process is read once per config, at its first child start (`inherited_env`)."""

    command: tuple[str, ...] | None  # None: the built-in ingest_worker (default_command)
    env_passthrough: tuple[str, ...] = ()  # extra names (or `PREFIX*`) the operator allows through
    extra_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_output_bytes: int = 1024 * 1024  # tail of stderr kept
    head_bytes: int = 4096  # head of stderr kept
    max_line_bytes: int = 64 * 1024  # longest PROGRESS line parsed
    max_result_bytes: int = 1024 * 1024  # longest RESULT line parsed
    kill_grace_s: float = 10.0
    drain_timeout_s: float = 2.0  # pipes a stray grandchild holds open are abandoned after this
    progress_interval_s: float = 0.25  # on_progress coalescing per job
    # Protocol lines parsed per second per child (a second's worth up front); beyond it
    # stdout is read more slowly and the pipe holds the child back.
    protocol_lines_per_s: float = 10_000.0
    rss_sample_interval_s: float = 0.5
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    user: str | None = None
    group: str | None = None
    tmp_root: str | None = None
    fork_server: ForkServer | None = None  # None: the daemon's (forkserver.FORK_SERVER)
    read_chunk_bytes: int = 64 * 1024

    @functools.cached_property
    def inherited_env(self) -> Mapping[str, str]:
        """The allowlisted part of this process's environment (see env.inherited_env)."""
        return MappingProxyType(inherited_env(os.environ, self.env_passthrough))


def default_command(
    python_executable: str, worker_path: str | None, worker_command: str | None
) -> tuple[str, ...] | None:
    """INGEST_WORKER_COMMAND (shlex-split) wins; then `python worker_path`; then, on another
    interpreter than the supervisor's, `python -m ingest_worker`. None: the built-in worker,
    run in the fork server's child without a new interpreter (see forkserver)."""
    if worker_command:
        argv = tuple(shlex.split(worker_command))
        if not argv:
            raise ValueError("INGEST_WORKER_COMMAND is empty")
        return argv
    if worker_path:
        return (python_executable, worker_path)
    if os.path.abspath(python_executable) != os.path.abspath(sys.executable):
        return (python_executable, "-m", "ingest_worker")
    return None
