"""The child's environment: an allowlist, never the supervisor's whole environment.

Secrets the supervisor holds (Supabase service key, Langfuse keys, the Redis URL with its
password) and systemd's NOTIFY_SOCKET / WATCHDOG_* reach a child only when the operator
names them in `env_passthrough`.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections.abc import Callable, Iterable, Mapping

from supervisor.sdnotify import scrub_env

BASE_ALLOWLIST: tuple[str, ...] = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "PYTHON*",
)
# Matched by a PYTHON* / LC_* pattern but the supervisor's own settings, not the child's.
_NEVER_BY_PATTERN = frozenset({"PYTHON_EXECUTABLE"})


def _allowed(name: str, patterns: Iterable[str]) -> bool:
    for pattern in patterns:
        if pattern.endswith("*"):
            if name.startswith(pattern[:-1]):
                return name not in _NEVER_BY_PATTERN
        elif name == pattern:
            return True
    return False


@functools.lru_cache(maxsize=32)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """`_allowed` for one pattern list, remembering each name's answer.

    Built once per runner config: checking every variable against every pattern cost
    about a thousand string comparisons per job, a visible share of the daemon's CPU.
    """
    decided: dict[str, bool] = {}

    def allowed(name: str) -> bool:
        verdict = decided.get(name)
        if verdict is None:
            if len(decided) >= 4096:  # an environment that keeps growing: stay bounded
                decided.clear()
            verdict = decided[name] = _allowed(name, patterns)
        return verdict

    return allowed


@functools.lru_cache(maxsize=32)
def _globs(explicit: tuple[str, ...]) -> tuple[str, ...]:
    """Names the operator listed explicitly that contain glob characters."""
    return tuple(n for n in explicit if any(c in n for c in "?[") and not n.endswith("*"))


def build_child_env(
    parent: Mapping[str, str],
    *,
    passthrough: Iterable[str],
    extra: Mapping[str, str],
    job_id: str,
    attempt: int,
    workdir: str,
) -> dict[str, str]:
    explicit = tuple(passthrough)
    env = _allowed_from(parent, explicit)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    # Progress lines must arrive while the job runs, not when a pipe buffer fills.
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["HOME"] = workdir
    env["TMPDIR"] = workdir
    env.update(extra)
    env["INGEST_JOB_ID"] = job_id
    env["INGEST_ATTEMPT"] = str(attempt)
    # Even if an operator lists them, systemd's notify/watchdog variables would let a child
    # speak for the daemon (READY, WATCHDOG); they never pass.
    return scrub_env(env)


def _allowed_part(parent: Mapping[str, str], explicit: tuple[str, ...]) -> dict[str, str]:
    allowed = _matcher((*BASE_ALLOWLIST, *explicit))
    # Keys first, values only for the few allowed: os.environ decodes on every access.
    env = {k: parent[k] for k in parent if allowed(k)}
    # Names the operator listed explicitly also pass when they contain glob characters.
    for name in _globs(explicit):
        env.update({k: v for k, v in parent.items() if fnmatch.fnmatchcase(k, name)})
    return env


# passthrough -> (the raw os.environ it was computed from, the allowed part)
_FROM_ENVIRON: dict[tuple[str, ...], tuple[dict[bytes, bytes], dict[str, str]]] = {}


def _allowed_from(parent: Mapping[str, str], explicit: tuple[str, ...]) -> dict[str, str]:
    """The allowed part of `parent`, a fresh dict.

    For os.environ it is computed again only when the environment changed: filtering it
    cost ~40 us per job, comparing os.environ's raw bytes dict with a snapshot ~1 us.
    """
    raw = getattr(os.environ, "_data", None) if parent is os.environ else None
    if not isinstance(raw, dict):
        return _allowed_part(parent, explicit)
    cached = _FROM_ENVIRON.get(explicit)
    if cached is None or cached[0] != raw:
        if len(_FROM_ENVIRON) >= 32:  # passthrough lists keep changing: stay bounded
            _FROM_ENVIRON.clear()
        cached = _FROM_ENVIRON[explicit] = (dict(raw), _allowed_part(parent, explicit))
    return dict(cached[1])
