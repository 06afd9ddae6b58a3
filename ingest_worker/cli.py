"""Entry point: read the job from stdin, run it, map failures to exit codes."""

from __future__ import annotations

import os
import sys

from ingest_worker.errors import EX_SOFTWARE, WorkerError
from ingest_worker.progress import Reporter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import TextIO


def execute(data: bytes, env: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    """Run one job given as JSON bytes; return the protocol's exit code.

    Separate from `main` so the fork server (supervisor.runner) can call it in a forked child
    without paying for a new interpreter.
    """
    from ingest_worker.config import WorkerConfig
    from ingest_worker.job import parse_job
    from ingest_worker.pipeline import run_job

    job = None
    try:
        job = parse_job(data, env)
        config = WorkerConfig(env)
        reporter = Reporter(out, job.secrets)
        result = run_job(job, config, reporter)
        reporter.progress(100, "done")
        reporter.result(result)
    except WorkerError as exc:
        message = str(exc)
        if job is not None:
            message = job.scrub(message)
        err.write(f"ingest_worker: {message}\n")
        err.flush()
        return exc.exit_code
    except Exception:
        # A bug, not the job's fault: retryable. The traceback may quote job data, so it
        # goes out scrubbed of the job's secrets like every other message.
        import traceback

        text = traceback.format_exc()
        err.write(job.scrub(text) if job is not None else text)
        err.flush()
        return EX_SOFTWARE
    return 0


def main() -> int:
    try:
        return execute(sys.stdin.buffer.read(), os.environ, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130
