"""Process hardening the daemon applies to itself before it reads any secret.

- `PR_SET_DUMPABLE=0`: `/proc/<pid>/environ`, `mem`, `maps` and ptrace of the daemon need
  CAP_SYS_PTRACE, so a child running as the same user cannot read the daemon's
  environment or memory (its Redis password, service-role key, Langfuse secret). A child
  is dumpable again after its own exec, which the runner relies on for its /proc reads.
- Clear the ambient capability set: whatever a unit grants there, a child started by exec
  inherits none. (Children under INGEST_CHILD_USER need a root daemon confined by a
  bounding set instead: see `child_user_problem`.)
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


CAP_CHOWN = 0
CAP_KILL = 5
CAP_SETGID = 6
CAP_SETUID = 7
CAP_SYS_PTRACE = 19
# What a daemon needs to run children as another user: switch their user, give them their
# directory, and signal them (timeouts, cancels, stops).
CHILD_USER_CAPABILITIES = {
    "CAP_SETUID": CAP_SETUID,
    "CAP_SETGID": CAP_SETGID,
    "CAP_CHOWN": CAP_CHOWN,
    "CAP_KILL": CAP_KILL,
}


def _effective_capabilities(status: str) -> int | None:
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return None


def _proc_hides_other_users(mountinfo: str, groups: set[int]) -> bool:
    """/proc mounted with hidepid other than 0 (ProtectProc=invisible, ptraceable,
    noaccess) and no `gid=` this process is in: another user's processes are hidden from,
    or closed to, this one."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/proc" and " - " in line:
            options = line.split(" - ", 1)[1].split()[-1].split(",")
            values = dict(o.split("=", 1) for o in options if "=" in o)
            hidden = values.get("hidepid", "0") not in ("0", "off")
            exempt = values.get("gid", "").isdigit() and int(values["gid"]) in groups
            if hidden and not exempt:
                return True
    return False


def child_user_problem(
    status: str, mountinfo: str, *, euid: int, groups: set[int] | None = None
) -> str | None:
    """Why this process could not run and stop the children of another user (given its
    `/proc/self/status`, `/proc/self/mountinfo`, effective uid and groups), or None.

    Only root hands its capabilities on to the fork server (exec keeps a root process's
    capabilities within the bounding set) and loses them all when a child switches to its
    user: a daemon of another user would have to pass them through the ambient set, where
    a built-in worker (forked, never exec'd) would keep them. Without CAP_KILL every signal
    to the children fails (they outlive their job and the daemon); with /proc hiding them,
    tree samples and orphan sweeps find none."""
    if euid != 0:
        return (
            "a daemon that is not root cannot hand the capabilities to switch users on to "
            "its children; run it as root confined to the capability bounding set in "
            "docs/security.md"
        )
    caps = _effective_capabilities(status)
    if caps is None:  # no capabilities to read: nothing to tell
        return None
    missing = [name for name, bit in CHILD_USER_CAPABILITIES.items() if not caps & (1 << bit)]
    if missing:
        return (
            f"the daemon lacks {', '.join(missing)}; its CapabilityBoundingSet= must hold "
            f"{' '.join(CHILD_USER_CAPABILITIES)} (docs/security.md)"
        )
    if _proc_hides_other_users(mountinfo, groups or set()) and not caps & (1 << CAP_SYS_PTRACE):
        return (
            "/proc hides other users' processes (ProtectProc=), so the daemon could not "
            "find that user's children; set ProtectProc=default in the unit (docs/security.md)"
        )
    return None
