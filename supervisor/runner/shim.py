"""A tiny compiled exec shim: the child-side setup without fork()ing the supervisor.

Setting a parent-death signal must happen in the child between fork and exec. Doing that
with Popen(preexec_fn=...) forces fork() instead of vfork() and runs Python in the forked
copy; on the 2-core target that added ~7 ms to every spawn, under load, in the event loop
thread. This small C program does the same work and then execs the real child. It is
compiled once per machine into a private cache directory; without a C compiler the
spawner falls back to preexec_fn.

Two sources, one contract. On x86-64 the shim is built without the C library (raw system
calls, ~9 KB): its extra exec costs ~0.05 ms of CPU per child, where a static glibc build
costs ~0.45 ms (starting glibc, not the program, is the price) - 4 % of a trivial child's
whole cost, measured in bench/bench_runner.py. Elsewhere, or if that build fails, the
portable libc source is used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

EXEC_FAILED_MARKER = b"ingest-shim: "
EXEC_FAILED_CODE = 127

SOURCE = r"""
/* usage: shim PARENT_PID LIMITS CWD -- PATH ARGV0 ARGS...
 * LIMITS is "-" or a comma list of RESOURCE=SOFT:HARD (numbers); CWD is "-" or the
 * directory to change to. The shim sets the parent death signal (and exits if the parent
 * already died), applies the limits, changes directory, closes every fd above 2, resets
 * every signal disposition and the signal mask, then execs PATH (absolute; execv, never
 * the shell fallback execvp has for files that are not executables). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static void close_from_3(void) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3, ~0U, 0) == 0) return;
#endif
    long max = sysconf(_SC_OPEN_MAX);  /* kernels before 5.9 */
    if (max < 0 || max > 65536) max = 65536;
    for (long fd = 3; fd < max; fd++) close((int)fd);
}

static int fail(const char *what, const char *arg) {
    fprintf(stderr, "ingest-shim: %s %s: %s\n", what, arg, strerror(errno));
    return 127;
}

int main(int argc, char **argv) {
    if (argc < 7 || strcmp(argv[4], "--") != 0) {
        fprintf(stderr, "ingest-shim: usage: shim PARENT_PID LIMITS CWD -- PATH ARGV0 ARGS...\n");
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
    if (strcmp(argv[3], "-") != 0 && chdir(argv[3]) != 0) return fail("chdir", argv[3]);
    close_from_3();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(argv[5], &argv[6]);
    return fail("exec", argv[5]);
}
"""

RAW_X86_64_SOURCE = r"""
/* The portable shim's contract without the C library, for x86-64 Linux only.
 * usage: shim PARENT_PID LIMITS CWD -- PATH ARGV0 ARGS...  (see the portable source) */
#include <sys/syscall.h>

typedef unsigned long u64;
struct k_sigaction { u64 handler, flags, restorer, mask; };
struct k_rlimit { u64 cur, max; };

static long sc(long n, long a, long b, long c, long d) {
    long r;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return r;
}

void *memset(void *s, int c, u64 n) {  /* the compiler may emit calls to it */
    unsigned char *p = s;
    while (n--) *p++ = (unsigned char)c;
    return s;
}

static u64 len(const char *s) { u64 n = 0; while (s[n]) n++; return n; }
static void put(const char *s) { sc(SYS_write, 2, (long)s, (long)len(s), 0); }

/* strerror()'s text for what exec, prctl and prlimit can return; glibc's form otherwise. */
static const char *reason(long err) {
    switch (err) {
    case 1: return "Operation not permitted";
    case 2: return "No such file or directory";
    case 5: return "Input/output error";
    case 7: return "Argument list too long";
    case 8: return "Exec format error";
    case 11: return "Resource temporarily unavailable";
    case 12: return "Cannot allocate memory";
    case 13: return "Permission denied";
    case 14: return "Bad address";
    case 20: return "Not a directory";
    case 21: return "Is a directory";
    case 22: return "Invalid argument";
    case 24: return "Too many open files";
    case 26: return "Text file busy";
    case 36: return "File name too long";
    case 40: return "Too many levels of symbolic links";
    case 80: return "Accessing a corrupted shared library";
    default: return 0;
    }
}

static void fail(const char *what, const char *arg, long err) {
    char digits[24], *d = digits + sizeof digits - 1;
    const char *text = reason(err);
    put("ingest-shim: "); put(what); put(" "); put(arg); put(": ");
    if (text) {
        put(text);
    } else {
        *d = 0;
        do { *--d = (char)('0' + err % 10); err /= 10; } while (err > 0);
        put("Unknown error "); put(d);
    }
    put("\n");
    sc(SYS_exit_group, 127, 0, 0, 0);
}

/* Decimal digits at *s up to a stop character; 0 when there are none or too many. */
static int number(const char **s, char stop, u64 *out) {
    u64 v = 0; const char *p = *s;
    if (*p < '0' || *p > '9') return 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        u64 digit = (u64)(*p - '0');
        if (v > (~0UL - digit) / 10) return 0;  /* would not fit in 64 bits */
        v = v * 10 + digit;
    }
    if (*p != stop) return 0;
    *out = v; *s = p + (stop ? 1 : 0);
    return 1;
}

__attribute__((force_align_arg_pointer, noreturn, used)) void shim_main(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    const char *l = argv[2], *p;
    u64 parent, res, soft, hard;
    if (argc < 7 || argv[4][0] != '-' || argv[4][1] != '-' || argv[4][2] != 0) {
        put("ingest-shim: usage: shim PARENT_PID LIMITS CWD -- PATH ARGV0 ARGS...\n");
        sc(SYS_exit_group, 127, 0, 0, 0);
    }
    long err = sc(SYS_prctl, 1 /* PR_SET_PDEATHSIG */, 9 /* SIGKILL */, 0, 0);
    if (err) fail("prctl", "PDEATHSIG", -err);
    p = argv[1];
    if (!number(&p, 0, &parent) || (u64)sc(SYS_getppid, 0, 0, 0, 0) != parent)
        sc(SYS_exit_group, 127, 0, 0, 0);
    if (!(l[0] == '-' && l[1] == 0)) {
        for (p = l; *p;) {
            char *tok = (char *)p, *end = tok;
            struct k_rlimit rl;
            while (*end && *end != ',') end++;
            char last = *end;
            *end = 0;  /* the token alone, for parsing and for the error message */
            if (!number(&p, '=', &res) || !number(&p, ':', &soft) || !number(&p, 0, &hard))
                fail("limit", tok, 22);
            rl.cur = soft; rl.max = hard;
            err = sc(SYS_prlimit64, 0, (long)res, (long)&rl, 0);
            if (err) fail("setrlimit", tok, -err);
            p = last ? end + 1 : end;
        }
    }
    if (!(argv[3][0] == '-' && argv[3][1] == 0)) {
        err = sc(SYS_chdir, (long)argv[3], 0, 0, 0);
        if (err) fail("chdir", argv[3], -err);
    }
    if (sc(436 /* close_range */, 3, ~0U, 0, 0) != 0) {  /* kernels before 5.9 */
        struct k_rlimit nofile = {65536, 65536};
        sc(SYS_prlimit64, 0, 7 /* RLIMIT_NOFILE */, 0, (long)&nofile);
        u64 max = nofile.cur < 65536 ? nofile.cur : 65536;
        for (u64 fd = 3; fd < max; fd++) sc(SYS_close, (long)fd, 0, 0, 0);
    }
    struct k_sigaction dfl = {0, 0, 0, 0};
    for (long sig = 1; sig <= 64; sig++)
        if (sig != 9 && sig != 19) sc(SYS_rt_sigaction, sig, (long)&dfl, 0, 8);
    u64 none = 0;
    sc(SYS_rt_sigprocmask, 2 /* SIG_SETMASK */, (long)&none, 0, 8);
    err = sc(SYS_execve, (long)argv[5], (long)&argv[6], (long)envp, 0);
    fail("exec", argv[5], -err);
    __builtin_unreachable();
}

__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call shim_main\n hlt\n");
"""
# (source, extra compiler flags) in order of preference for this machine.
_RAW_FLAGS = ["-static", "-nostdlib", "-ffreestanding", "-fno-stack-protector", "-fno-builtin"]


def _builds(portable: bool) -> list[tuple[str, list[str]]]:
    builds = [] if portable or platform.machine() != "x86_64" else [(RAW_X86_64_SOURCE, _RAW_FLAGS)]
    # A static libc build starts faster than a dynamic one; not every libc ships one.
    return [*builds, (SOURCE, ["-static"]), (SOURCE, [])]


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


def build_shim(cache_dir: Path | None = None, *, portable: bool = False) -> str | None:
    """Path of the compiled shim, compiling it on first use; None when that is impossible.

    portable: skip the libc-free x86-64 build (tests run both).
    """
    builds = _builds(portable)
    digest = hashlib.sha256(repr(builds).encode()).hexdigest()[:12]
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
            out = Path(work) / "shim"
            for source, flags in builds:
                src.write_text(source)
                done = subprocess.run(
                    [compiler, "-O2", *flags, "-o", str(out), str(src)],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
                if done.returncode == 0 and _works(out):
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


def _works(shim: Path) -> bool:
    """The freshly built shim runs a program with a limit applied (a bad build is skipped)."""
    true = shutil.which("true") or "/bin/true"
    try:
        done = subprocess.run(
            [str(shim), str(os.getpid()), "4=0:0", "/", "--", true, "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


_cached: dict[str, str | None] = {}


def default_shim() -> str | None:
    """The shim for this process, built at most once."""
    if "path" not in _cached:
        _cached["path"] = build_shim()
        if _cached["path"] is None:
            log.warning("no spawn shim (no C compiler?): children start through preexec_fn")
    return _cached["path"]


def encode_limits(limits: list[tuple[int, int, int]]) -> str:
    """RESOURCE=SOFT:HARD,... for the shim; a negative value (RLIM_INFINITY is -1 in
    Python) is written as the unsigned infinity both shims parse."""

    def unsigned(value: int) -> int:
        return value if value >= 0 else _RLIM_INFINITY_UNSIGNED

    parts = [f"{res}={unsigned(soft)}:{unsigned(hard)}" for res, soft, hard in limits]
    return ",".join(parts) or "-"


_RLIM_INFINITY_UNSIGNED = 2**64 - 1


