"""A tiny compiled exec shim: the child-side setup without fork()ing the supervisor.

Setting a parent-death signal must happen in the child between fork and exec. Doing that
with Popen(preexec_fn=...) forces fork() instead of vfork() and runs Python in the forked
copy; on the 2-core target that added ~7 ms to every spawn, under load, in the event loop
thread. This ~50-line C program does the same work and then execs the real child, costing
one extra exec of a small static binary (~1 ms). It is compiled once per machine into a
private cache directory; without a C compiler the spawner falls back to preexec_fn.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

EXEC_FAILED_MARKER = b"ingest-shim: "
EXEC_FAILED_CODE = 127

SOURCE = r"""
/* usage: shim PARENT_PID LIMITS -- PATH ARGV0 ARGS...
 * LIMITS is "-" or a comma list of RESOURCE=SOFT:HARD (numbers). The shim sets the parent
 * death signal (and exits if the parent already died), applies the limits, resets every
 * signal disposition and the signal mask, then execs PATH (absolute; execv, never the
 * shell fallback execvp has for files that are not executables). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

static int fail(const char *what, const char *arg) {
    fprintf(stderr, "ingest-shim: %s %s: %s\n", what, arg, strerror(errno));
    return 127;
}

int main(int argc, char **argv) {
    if (argc < 6 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "ingest-shim: usage: shim PARENT_PID LIMITS -- PATH ARGV0 ARGS...\n");
        return 127;
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return fail("prctl", "PDEATHSIG");
    if (getppid() != (pid_t)strtol(argv[1], NULL, 10)) return 127;
    if (strcmp(argv[2], "-") != 0) {
        char *save = NULL;
        for (char *tok = strtok_r(argv[2], ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            int res;
            unsigned long long soft, hard;
            if (sscanf(tok, "%d=%llu:%llu", &res, &soft, &hard) != 3) {
                errno = EINVAL;
                return fail("limit", tok);
            }
            struct rlimit rl = {(rlim_t)soft, (rlim_t)hard};
            if (setrlimit(res, &rl) != 0) return fail("setrlimit", tok);
        }
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(argv[4], &argv[5]);
    return fail("exec", argv[4]);
}
"""


def _cache_dir() -> Path:
    explicit = os.environ.get("INGEST_SHIM_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ingest-supervisor"


def _trusted(path: Path) -> bool:
    """Ours and writable by nobody else: a replaced shim would run as the supervisor."""
    try:
        for p in (path, path.parent):
            st = p.stat()
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                return False
    except OSError:
        return False
    return os.access(path, os.X_OK)


def build_shim(cache_dir: Path | None = None) -> str | None:
    """Path of the compiled shim, compiling it on first use; None when that is impossible."""
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:12]
    directory = cache_dir or _cache_dir()
    target = directory / f"spawn-shim-{digest}"
    if _trusted(target):
        return str(target)
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory) as work:
            src = Path(work) / "shim.c"
            src.write_text(SOURCE)
            out = Path(work) / "shim"
            for static in (["-static"], []):  # static starts faster; not every libc ships one
                done = subprocess.run(
                    [compiler, "-O2", *static, "-o", str(out), str(src)],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
                if done.returncode == 0:
                    break
            else:
                log.warning("could not compile the spawn shim: %s", done.stderr[-500:])
                return None
            out.chmod(0o755)
            os.replace(out, target)  # atomic: concurrent supervisors race harmlessly
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not build the spawn shim in %s: %s", directory, exc)
        return None
    return str(target) if _trusted(target) else None


_cached: dict[str, str | None] = {}


def default_shim() -> str | None:
    """The shim for this process, built at most once."""
    if "path" not in _cached:
        _cached["path"] = build_shim()
        if _cached["path"] is None:
            log.warning("no spawn shim (no C compiler?): children start through preexec_fn")
    return _cached["path"]


def encode_limits(limits: list[tuple[int, int, int]]) -> str:
    return ",".join(f"{res}={soft}:{hard}" for res, soft, hard in limits) or "-"


