"""Running the worker in an interpreter that is already up: the fork server's spare.

The fork server imports this package once (`preload`); each spare it forks then runs one
job in place (`run`), set up as a fresh `python -u -m ingest_worker` would be, so a job
pays for no interpreter start and no imports.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


def preload() -> None:
    """Pay for the worker's imports once, in the server; every later child inherits them."""
    import ingest_worker.cli
    import ingest_worker.config
    import ingest_worker.job
    import ingest_worker.pipeline  # noqa: F401

    gc.collect()
    gc.freeze()  # keep the shared heap out of the children's collections (fewer COW copies)


def run(env: Mapping[str, str]) -> int:
    """One job from fd 0, in this (forked) process, with `env` as its environment; the
    protocol's exit code. Fds 0-2 must already be the job's pipes."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # what CPython installs
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(env)
    stdin = io.FileIO(0, "r", closefd=False)
    out = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True)
    err = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False),
        encoding="utf-8",
        errors="backslashreplace",
        write_through=True,
    )
    sys.stdin = io.TextIOWrapper(io.BufferedReader(stdin), encoding="utf-8")
    sys.stdout, sys.stderr = out, err
    from ingest_worker.cli import execute

    try:
        code = execute(stdin.read(), os.environ, out, err)
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    with contextlib.suppress(Exception):
        out.flush()
        err.flush()
    return code
