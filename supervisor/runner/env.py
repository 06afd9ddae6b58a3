"""The child's environment: an allowlist, never the supervisor's whole environment.

Secrets the supervisor holds (Supabase service key, Langfuse keys, the Redis URL with its
password) reach a child only when the operator names them in `env_passthrough`; systemd's
NOTIFY_SOCKET / WATCHDOG_* never do. Python's own variables pass only by name: those that
shape how an interpreter finds and runs code, not any `PYTHON*` a host happens to set.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping

from supervisor.sdnotify import scrub_env

BASE_ALLOWLIST: tuple[str, ...] = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSAFEPATH",
    "PYTHONNOUSERSITE",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONHASHSEED",
    "PYTHONWARNINGS",
    "PYTHONFAULTHANDLER",
)


def _matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A test for names: exact names, `PREFIX*` prefixes, or (named by the operator) any
    fnmatch glob. Exact names and prefixes are checked in C (a set, str.startswith)."""
    exact: set[str] = set()
    prefixes: list[str] = []
    globs: list[str] = []
    for pattern in patterns:
        if pattern.endswith("*") and not any(c in pattern[:-1] for c in "*?["):
            prefixes.append(pattern[:-1])
        elif any(c in pattern for c in "*?["):
            globs.append(pattern)
        else:
            exact.add(pattern)
    starts = tuple(prefixes)

    def allowed(name: str) -> bool:
        if name in exact or name.startswith(starts):
            return True
        return any(fnmatch.fnmatchcase(name, g) for g in globs)

    return allowed


def inherited_env(parent: Mapping[str, str], passthrough: Iterable[str]) -> dict[str, str]:
    """What of `parent` every child sees: the allowlist and the names the operator added."""
    allowed = _matcher((*BASE_ALLOWLIST, *passthrough))
    env = {name: value for name, value in parent.items() if allowed(name)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    # Progress lines must arrive while the job runs, not when a pipe buffer fills.
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def job_env(
    inherited: Mapping[str, str],
    *,
    extra: Mapping[str, str],
    job_id: str,
    attempt: int,
    workdir: str,
) -> dict[str, str]:
    """One child's environment: `inherited`, its directory, the operator's extras, its job."""
    env = dict(inherited)
    env["HOME"] = workdir
    env["TMPDIR"] = workdir
    env.update(extra)
    env["INGEST_JOB_ID"] = job_id
    env["INGEST_ATTEMPT"] = str(attempt)
    # Even if an operator lists them, systemd's notify/watchdog variables would let a child
    # speak for the daemon (READY, WATCHDOG); they never pass.
    return scrub_env(env)
