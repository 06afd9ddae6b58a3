"""The kernel's count of OOM kills in the memory cgroup the supervisor and its children share.

A child that dies of SIGKILL nobody here sent was killed by the OOM killer, or by someone
with `kill -9`. Where the cgroup's counter can be read (cgroup v2 `memory.events`, v1
`memory.oom_control`, field `oom_kill`), a rise during the child's run tells the two
apart; elsewhere the runner has to assume the OOM killer. Under systemd with MemoryMax=
the service's cgroup is exactly this one.
"""

from __future__ import annotations

import os

_CGROUP_ROOT = "/sys/fs/cgroup"
_resolved: dict[int, str | None] = {}  # by pid: a process may move before its first job


def _counter_file() -> str | None:
    pid = os.getpid()
    if pid not in _resolved:
        _resolved[pid] = _find_counter_file()
    return _resolved[pid]


def _find_counter_file() -> str | None:
    try:
        with open("/proc/self/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        if "memory" in controllers.split(","):  # cgroup v1 memory controller
            candidates.append(os.path.join(_CGROUP_ROOT, "memory", path, "memory.oom_control"))
        elif controllers == "":  # cgroup v2 (pure, or the hybrid "unified" mount)
            for mount in (_CGROUP_ROOT, os.path.join(_CGROUP_ROOT, "unified")):
                candidates.append(os.path.join(mount, path, "memory.events"))
    return next((c for c in candidates if _read(c) is not None), None)


def _read(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    for line in data.splitlines():
        name, _, value = line.partition(b" ")
        if name == b"oom_kill" and value.strip().isdigit():
            return int(value)
    return None


def oom_kills() -> int | None:
    """OOM kills so far in our memory cgroup; None where no counter can be read."""
    path = _counter_file()
    return _read(path) if path is not None else None
