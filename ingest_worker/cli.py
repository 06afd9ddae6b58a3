"""Entry point: read the job from stdin, run it, map failures to exit codes."""

from __future__ import annotations

import os
import sys

from ingest_worker.errors import WorkerError
from ingest_worker.progress import Reporter


def main() -> int:
    from ingest_worker.config import WorkerConfig
    from ingest_worker.job import parse_job
    from ingest_worker.pipeline import run_job

    job = None
    try:
        job = parse_job(sys.stdin.buffer.read(), os.environ)
        config = WorkerConfig(os.environ)
        reporter = Reporter(sys.stdout, job.secrets)
        result = run_job(job, config, reporter)
        reporter.progress(100, "done")
        reporter.result(result)
    except WorkerError as exc:
        message = str(exc)
        if job is not None:
            message = job.scrub(message)
        sys.stderr.write(f"ingest_worker: {message}\n")
        sys.stderr.flush()
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0
