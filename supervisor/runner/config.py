"""How children are started: the runner's frozen settings and the default child command."""

from __future__ import annotations

import importlib.util
import os
import shlex
import site
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor.runner.spawner import Spawner


@dataclass(frozen=True)
class ResourceLimits:
    """Kernel limits set in the child before exec; None leaves the supervisor's own value.

    `processes` is RLIMIT_NPROC, which the kernel counts per user, not per child: only
    meaningful together with a dedicated `user`.
    """

    memory_bytes: int | None = None  # RLIMIT_AS: allocations beyond it fail (MemoryError)
    cpu_seconds: int | None = None  # RLIMIT_CPU: SIGXCPU, then SIGKILL at the hard limit
    open_files: int | None = None  # RLIMIT_NOFILE
    processes: int | None = None  # RLIMIT_NPROC
    core_dumps: bool = False  # RLIMIT_CORE 0 unless True


@dataclass(frozen=True)
class RunnerConfig:
    command: tuple[str, ...]
    env_passthrough: tuple[str, ...] = ()  # extra names (or `PREFIX*`) the operator allows through
    extra_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_output_bytes: int = 1024 * 1024  # tail kept per stream
    head_bytes: int = 4096  # head kept per stream
    max_line_bytes: int = 64 * 1024  # longest PROGRESS line parsed
    max_result_bytes: int = 1024 * 1024  # longest RESULT line parsed
    kill_grace_s: float = 10.0
    drain_timeout_s: float = 2.0  # pipes a stray grandchild holds open are abandoned after this
    progress_interval_s: float = 0.25  # on_progress coalescing per job
    rss_sample_interval_s: float = 0.5
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    user: str | None = None
    group: str | None = None
    tmp_root: str | None = None
    reuse_workdirs: bool = True  # see supervisor.runner.workdir
    spawner: Spawner | None = None  # None: fork/exec (supervisor.runner.spawner.ExecSpawner)
    read_chunk_bytes: int = 64 * 1024


# Runs the worker module on an interpreter started with -S. Site processing (.pth files,
# notably setuptools' editable-install finder) costs ~35 ms of a ~50 ms start; the paths
# site would add are computed once here and handed over instead. The package's __main__ is
# imported directly (it runs the job at import): runpy's own import costs ~3 ms per child.
_BOOT = "import sys;sys.path[1:1]={paths!r};import {module}.__main__"


def default_command(
    python_executable: str, worker_path: str | None, worker_command: str | None
) -> tuple[str, ...]:
    """INGEST_WORKER_COMMAND (shlex-split) wins; then `python worker_path`; else the module.

    The module form starts `python -S` with the supervisor's own site paths when the worker
    interpreter is the supervisor's own (the same venv); any other interpreter gets a plain
    `python -m ingest_worker` with full site processing.
    """
    if worker_command:
        argv = tuple(shlex.split(worker_command))
        if not argv:
            raise ValueError("INGEST_WORKER_COMMAND is empty")
        return argv
    if worker_path:
        return (python_executable, worker_path)
    fast = _fast_module_command(python_executable, "ingest_worker")
    return fast if fast is not None else (python_executable, "-m", "ingest_worker")


def _fast_module_command(python_executable: str, module: str) -> tuple[str, ...] | None:
    if os.path.abspath(python_executable) != os.path.abspath(sys.executable):
        return None
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = next(iter(spec.submodule_search_locations))
    paths = [os.path.dirname(package_dir)]
    for extra in (*site.getsitepackages(), *_pth_added_paths()):
        if extra not in paths and os.path.isdir(extra):
            paths.append(extra)
    return (python_executable, "-S", "-c", _BOOT.format(paths=paths, module=module))


def _pth_added_paths() -> list[str]:
    """Directories site added to sys.path beyond the standard library and site-packages."""
    std = {os.path.dirname(os.__file__)}
    sites = set(site.getsitepackages())
    out: list[str] = []
    for entry in sys.path[1:]:
        if not entry or entry in sites or any(entry.startswith(s) for s in std):
            continue
        if any(entry.startswith(s + os.sep) for s in sites):
            out.append(entry)
    return out
