"""Child runner throughput: run_child vs a bare subprocess.Popen loop, same child, same run.

    .venv/bin/python bench/bench_runner.py [--count 1000] [--concurrency 2]

Each child reads its job from stdin, prints PROGRESS 0..100 in steps of 10 and exits 0.
Prints children/s and start-to-first-PROGRESS p50/p99 for:
  popen           bare Popen (vfork path) with pipes, parallelism N threads
  run_child       the runner at concurrency N (clean env, a new job directory, the child
                  started by the fork server with posix_spawn, tree tracking, bounded
                  output), in a process that is a child subreaper, as the daemon is; no
                  limit at all, core dumps included
  run_child+lim   the same with the daemon's default limits (2 GiB, 600 CPU s, no core):
                  the server spawns prlimit(1), which sets them and execs the child
Contenders alternate in rounds so a busy machine's load falls on all of them alike. CPU
per child: this process ("supervisor"), the fork server's own, and the child's (what
Popen reaped, or what the fork server reported for run_child's children).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from supervisor.runner import FORK_SERVER, ResourceLimits, RunnerConfig, StopRequest, run_child
from supervisor.runner.containment import ORPHANS

CHILD_CODE = (
    "import sys\n"
    "sys.stdin.read()\n"
    "for p in range(0, 101, 10):\n"
    "    print(f'PROGRESS: {p} step', flush=True)\n"
)
ARGV = (sys.executable, "-S", "-c", CHILD_CODE)
JOB = b'{"job_id": "bench", "tenant_id": "t", "data_source": {"type": "text"}}'


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(name: str, count: int, totals: Totals) -> float:
    """One line per contender; returns children/s."""
    rate = count / totals.elapsed
    print(
        f"{name:<14} {rate:8.1f} children/s   first PROGRESS p50"
        f" {pct(totals.firsts, 0.5) * 1000:5.1f} ms p99 {pct(totals.firsts, 0.99) * 1000:5.1f} ms"
        f"   CPU per child: supervisor {totals.parent_cpu / count * 1000:.2f} ms,"
        f" fork server {totals.server_cpu / count * 1000:.2f} ms,"
        f" child {totals.child_cpu / count * 1000:.2f} ms"
    )
    return rate


# (elapsed seconds, start-to-first-PROGRESS per child, child CPU seconds or None: reaped here)
Timing = tuple[float, list[float], float | None]


@dataclass
class Totals:
    elapsed: float = 0.0
    firsts: list[float] = field(default_factory=list)
    parent_cpu: float = 0.0  # this process, every thread
    server_cpu: float = 0.0  # the fork server itself, its children excluded
    child_cpu: float = 0.0


def cpu_now() -> tuple[float, float, float]:
    """(this process, the children it reaped, the fork server's own) CPU seconds."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = psutil.Process(FORK_SERVER.pid or os.getpid()).cpu_times()
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime, server.user + server.system


def popen_loop(count: int, parallelism: int) -> Timing:
    firsts: list[float] = []
    lock = threading.Lock()
    todo = iter(range(count))

    def worker() -> None:
        while True:
            with lock:
                if next(todo, None) is None:
                    return
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                ARGV,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(JOB)
            proc.stdin.close()
            first = None
            for line in proc.stdout:
                if first is None and line.startswith(b"PROGRESS:"):
                    first = time.perf_counter() - t0
            assert proc.stderr is not None
            proc.stderr.read()
            proc.stdout.close()
            proc.stderr.close()
            proc.wait()
            with lock:
                firsts.append(first or 0.0)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(parallelism)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, firsts, None


async def runner_loop(count: int, concurrency: int, config: RunnerConfig) -> Timing:
    firsts: list[float] = []
    failures = 0
    child_cpu = 0.0
    todo = iter(range(count))

    async def slot() -> None:
        nonlocal failures, child_cpu
        for i in todo:
            t0 = time.perf_counter()
            first: list[float] = []

            def on_progress(
                p: float, m: str | None, first: list[float] = first, t0: float = t0
            ) -> None:
                if not first:
                    first.append(time.perf_counter() - t0)

            outcome = await run_child(
                config,
                job_id=f"bench-{i}",
                attempt=1,
                job_json=JOB,
                timeout_s=60,
                stop=StopRequest(),
                on_progress=on_progress,
            )
            if not outcome.succeeded or outcome.progress != 100:
                failures += 1
            child_cpu += outcome.cpu_s
            firsts.append(first[0] if first else 0.0)

    started = time.perf_counter()
    await asyncio.gather(*(slot() for _ in range(concurrency)))
    if failures:
        print(f"  !! {failures} children did not succeed")
    return time.perf_counter() - started, firsts, child_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="children per contender")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="contenders alternate in this many rounds (fair on a busy box)",
    )
    args = parser.parse_args()
    n, par = args.count, args.concurrency
    print(
        f"{n} no-op children per contender, parallelism {par}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f}, child: python -S -c <PROGRESS 0..100 by 10>"
    )
    # As in the daemon, which sweeps escaped descendants as a subreaper. Only orphans
    # carrying a job id are ever killed; the Popen contenders reap their own.
    ORPHANS.become_subreaper(kill_unattributed=False)
    FORK_SERVER.start()  # as the daemon does before its first job
    # The default, no limit: the server starts the command itself. A limit makes prlimit(1)
    # start it instead.
    config = RunnerConfig(command=ARGV)
    limited = RunnerConfig(
        command=ARGV, limits=ResourceLimits(memory_bytes=2 << 30, cpu_seconds=600)
    )
    contenders: dict[str, Callable[[int], Timing]] = {
        "popen": lambda k: popen_loop(k, par),
        "run_child": lambda k: asyncio.run(runner_loop(k, par, config)),
        "run_child+lim": lambda k: asyncio.run(runner_loop(k, par, limited)),
    }
    popen_loop(max(10, n // 50), par)  # warm the page cache
    totals = {name: Totals() for name in contenders}
    per_round = max(1, n // args.rounds)
    done = 0
    while done < n:
        k = min(per_round, n - done)
        for name, fn in contenders.items():
            parent_before, child_before, server_before = cpu_now()
            elapsed, firsts, child_cpu = fn(k)
            parent_after, child_after, server_after = cpu_now()
            t = totals[name]
            t.elapsed += elapsed
            t.firsts += firsts
            t.parent_cpu += parent_after - parent_before
            t.child_cpu += child_after - child_before if child_cpu is None else child_cpu
            if name != "popen":
                t.server_cpu += server_after - server_before
        done += k
    rates = {name: report(name, n, t) for name, t in totals.items()}
    for name in ("run_child", "run_child+lim"):
        print(f"{name} / popen throughput: {rates[name] / rates['popen'] * 100:.0f}%")
    print(f"load at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
