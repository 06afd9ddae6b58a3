"""A tiny supervisor: runs one child through run_child and reports its pid on stdout."""
import asyncio
import os
import sys

from supervisor.runner import ExecSpawner, RunnerConfig, StopRequest, run_child
from supervisor.runner.shim import build_shim


def main() -> None:
    child = sys.argv[1:]

    def on_progress(pct: float, message: str | None) -> None:
        print(f"CHILD {message}", flush=True)

    mode = os.environ.get("MINI_SPAWN")
    spawner = {
        "preexec": ExecSpawner(shim=None),
        "shim-libc": ExecSpawner(shim=build_shim(portable=True)),
    }.get(mode or "")
    config = RunnerConfig(command=tuple(child), progress_interval_s=0.0, spawner=spawner)
    asyncio.run(
        run_child(config, job_id="mini", attempt=1, job_json=b"{}", timeout_s=600,
                  stop=StopRequest(), on_progress=on_progress)
    )


main()
