"""The kernel's count of OOM kills in the memory cgroup the supervisor and its children share.

A child that dies of SIGKILL nobody here sent was killed by the OOM killer, or by someone
with `kill -9`. Where the cgroup's counter can be read (cgroup v2 `memory.events`, v1
`memory.oom_control`, field `oom_kill`), a rise during the child's run tells the two
apart; elsewhere the runner has to assume the OOM killer. Under systemd with MemoryMax=
the service's cgroup is exactly this one.
"""

from __future__ import annotations

import os
import signal

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
            return counter_file_for(fh.read(), _CGROUP_ROOT)
    except OSError:
        return None


def counter_file_for(proc_self_cgroup: str, root: str) -> str | None:
    """The readable OOM counter for a /proc/self/cgroup text under cgroupfs `root`:
    the v1 memory controller's memory.oom_control, else v2's memory.events (at the root
    of a pure v2 mount or under `unified` on a hybrid host)."""
    candidates: list[str] = []
    for line in proc_self_cgroup.splitlines():
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)  # the path itself may hold colons
        path = path.lstrip("/")
        if "memory" in controllers.split(","):
            candidates.insert(0, os.path.join(root, "memory", path, "memory.oom_control"))
        elif controllers == "":
            for mount in (root, os.path.join(root, "unified")):
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


# What runtimes print when an allocation fails (under RLIMIT_AS a child sees these, not
# the OOM killer).
_OOM_MARKERS = (b"MemoryError", b"Cannot allocate memory", b"std::bad_alloc", b"out of memory")


def says_out_of_memory(stderr_end: bytes) -> bool:
    """Whether the end of a child's stderr says an allocation failed."""
    return any(marker in stderr_end for marker in _OOM_MARKERS)


def looks_out_of_memory(
    *,
    exit_code: int | None,
    signum: int | None,
    we_killed: bool,
    kills_at_start: int | None,
    memory_limited: bool,
    stderr_end: bytes,
) -> bool:
    """Whether a child that exited on its own (not 0) ran out of memory."""
    if exit_code == 0:
        return False
    if signum == signal.SIGKILL and not we_killed:
        # Nobody here sent it: the OOM killer, or someone's kill -9. The cgroup's OOM
        # counter tells which where it can be read; elsewhere assume the OOM killer.
        now = oom_kills()
        if kills_at_start is None or now is None:
            return True
        return now > kills_at_start
    return memory_limited and says_out_of_memory(stderr_end)
