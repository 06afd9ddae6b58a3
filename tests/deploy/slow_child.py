"""A child for the deployment tests: sleeps while printing PROGRESS, then succeeds.

argv: <marker> <state_dir>. The marker (the test's queue name) lets the test find every
child it caused with a process scan. The first run of a job sleeps `metadata.first_run_s`
(long enough to be interrupted by a stop); a rerun of the same job, after it was released,
sleeps `metadata.rerun_s`. It also records the names of the environment variables it got.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    state_dir = Path(sys.argv[2])
    job = json.loads(sys.stdin.read() or "{}")
    payload = job.get("payload", job) if isinstance(job, dict) else {}
    meta = payload.get("metadata") or {}
    job_id = os.environ.get("INGEST_JOB_ID") or payload.get("job_id", "unknown")
    marker = state_dir / f"{job_id}.started"
    rerun = marker.exists()
    with marker.open("a") as f:
        f.write(f"{os.getpid()}\n")
    # What the child inherited, so tests can check nothing of systemd's leaks through.
    # Written whole and then renamed: a test waiting for the file never reads half of it.
    partial = state_dir / f"{job_id}.env.json.partial"
    partial.write_text(json.dumps(sorted(os.environ)))
    partial.rename(state_dir / f"{job_id}.env.json")
    duration = float(meta.get("rerun_s" if rerun else "first_run_s", 1))
    steps = max(1, int(duration / 0.2))
    for i in range(steps):
        print(f"PROGRESS: {int(100 * i / steps)} step {i}", flush=True)
        time.sleep(duration / steps)
    print('RESULT: {"ok": true}', flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
