"""Process hardening the daemon applies to itself before it reads any secret.

- `PR_SET_DUMPABLE=0`: `/proc/<pid>/environ`, `mem`, `maps` and ptrace of the daemon need
  CAP_SYS_PTRACE, so a child running as the same user cannot read the daemon's
  environment or memory (its Redis password, service-role key, Langfuse secret). A child
  is dumpable again after its own exec, which the runner relies on for its /proc reads.
- Clear the ambient capability set: when the unit grants CAP_SETUID/CAP_SETGID so that
  children can run as another user (INGEST_CHILD_USER), the daemon keeps them in its
  permitted set but a child started by exec inherits none.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return int(fn(option, arg2, arg3, 0, 0))


def harden_process() -> None:
    """Make this process non-dumpable and drop its ambient capabilities (Linux only)."""
    try:
        if _prctl(PR_SET_DUMPABLE, 0) != 0:
            log.warning("prctl(PR_SET_DUMPABLE, 0) failed: children may read /proc/<pid>")
        # EINVAL on kernels before 4.3, which have no ambient set to clear.
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except (OSError, AttributeError):
        log.warning("prctl unavailable: the daemon stays dumpable")


CAP_KILL = 5
CAP_SYS_PTRACE = 19


def _effective_capabilities(status: str) -> int:
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _proc_hides_other_users(mountinfo: str) -> bool:
    """/proc mounted with hidepid other than 0 (ProtectProc=invisible, ptraceable,
    noaccess): another user's processes are hidden from, or closed to, this one."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/proc" and " - " in line:
            options = line.split(" - ", 1)[1].split()[-1].split(",")
            for option in options:
                if option.startswith("hidepid=") and option[8:] not in ("0", "off"):
                    return True
    return False


def child_user_problem(status: str, mountinfo: str) -> str | None:
    """Why this process could not stop and sweep the processes of another user (its
    `/proc/self/status` and `/proc/self/mountinfo` given), or None. Without CAP_KILL every
    signal to them fails (time-outs, cancels, stops: the child outlives its job and the
    daemon); with /proc hiding them, tree samples and orphan sweeps find none."""
    caps = _effective_capabilities(status)
    if not caps & (1 << CAP_KILL):
        return (
            "the daemon lacks CAP_KILL, so it could not stop that user's children; add "
            "CAP_KILL to the unit's CapabilityBoundingSet= and AmbientCapabilities= "
            "(docs/security.md)"
        )
    if _proc_hides_other_users(mountinfo) and not caps & (1 << CAP_SYS_PTRACE):
        return (
            "/proc hides other users' processes (ProtectProc=), so the daemon could not "
            "find that user's children; set ProtectProc=default in the unit (docs/security.md)"
        )
    return None
