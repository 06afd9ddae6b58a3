"""A tiny supervisor: runs one child through run_child and reports on stdout.

Prints `CHILD <progress message>` for each progress update, then `DONE <strays killed>`
and `OUTCOME <json>` at the end. MINI_SUBREAPER=1 makes
it a child subreaper with a periodic orphan sweep, as the daemon is; MINI_HOLD=1 keeps it
alive after the job until its stdin closes; MINI_CGROUP_PROCS names a cgroup.procs file
it moves itself into first; MINI_USER runs the child as that user; MINI_ALONGSIDE (a JSON
argv) runs a second job at the same time and prints `DONE2` when that one ends;
MINI_NO_PIDFD=1 takes os.pidfd_open away.
"""

import asyncio
import json
import os
import sys

from supervisor.runner import RunnerConfig, StopRequest, run_child
from supervisor.runner.containment import ORPHANS


async def run_alongside(config: RunnerConfig) -> None:
    outcome = await run_child(
        config, job_id="mini-2", attempt=1, job_json=b"{}", timeout_s=600, stop=StopRequest()
    )
    print(f"DONE2 {outcome.stray_processes_killed}", flush=True)


async def main() -> None:
    child = sys.argv[1:]

    def on_progress(pct: float, message: str | None) -> None:
        print(f"CHILD {message}", flush=True)

    if os.environ.get("MINI_NO_PIDFD") == "1":
        del os.pidfd_open  # as on a Python built without pidfds
    if os.environ.get("MINI_SUBREAPER") == "1":
        assert ORPHANS.become_subreaper(kill_unattributed=True)
        if os.environ.get("MINI_NO_CHEAP") == "1":
            ORPHANS._cheap = False  # as on kernels without /proc/*/children
        sweeper = asyncio.create_task(ORPHANS.run_periodically(0.2))
    user = os.environ.get("MINI_USER") or None
    config = RunnerConfig(command=tuple(child), progress_interval_s=0.0, user=user)
    alongside = None
    if os.environ.get("MINI_ALONGSIDE"):
        second = RunnerConfig(command=tuple(json.loads(os.environ["MINI_ALONGSIDE"])))
        alongside = asyncio.create_task(run_alongside(second))
    outcome = await run_child(
        config,
        job_id="mini",
        attempt=1,
        job_json=b"{}",
        timeout_s=600,
        stop=StopRequest(),
        on_progress=on_progress,
    )
    print(f"DONE {outcome.stray_processes_killed}", flush=True)
    summary = {
        "ended": outcome.ended.value,
        "signal": outcome.signal,
        "oom_killed": outcome.oom_killed,
        "error": outcome.error,
        "result": outcome.result,
    }
    print("OUTCOME " + json.dumps(summary), flush=True)
    if alongside is not None:
        await alongside
    if os.environ.get("MINI_HOLD") == "1":
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    if os.environ.get("MINI_SUBREAPER") == "1":
        sweeper.cancel()


if os.environ.get("MINI_CGROUP_PROCS"):
    with open(os.environ["MINI_CGROUP_PROCS"], "w") as fh:
        fh.write(str(os.getpid()))
asyncio.run(main())
