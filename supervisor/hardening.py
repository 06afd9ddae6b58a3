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
