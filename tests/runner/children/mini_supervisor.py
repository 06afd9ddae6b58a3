"""A tiny supervisor: runs one child through run_child and reports its pid on stdout."""
import asyncio
import sys

from supervisor.runner import RunnerConfig, StopRequest, run_child


def main() -> None:
    child = sys.argv[1:]

    def on_progress(pct: float, message: str | None) -> None:
        print(f"CHILD {message}", flush=True)

    config = RunnerConfig(command=tuple(child), progress_interval_s=0.0)
    asyncio.run(
        run_child(config, job_id="mini", attempt=1, job_json=b"{}", timeout_s=600,
                  stop=StopRequest(), on_progress=on_progress)
    )


main()
