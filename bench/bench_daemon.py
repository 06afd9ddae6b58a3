"""End-to-end benchmark of the supervisor daemon against bare Popen of the same child.

    .venv/bin/python bench/bench_daemon.py                      # ~5-10 min
    .venv/bin/python bench/bench_daemon.py --jobs 300 --samples 50   # a quick look
    .venv/bin/python bench/bench_daemon.py --baseline /tmp/old-tree  # before vs after

Child kinds: `custom` (INGEST_WORKER_COMMAND running a Python script on the default
interpreter that prints PROGRESS 0..100 by 10), `text` (the built-in ingest_worker on a
tiny text job, INGEST_CHUNK_STORE=none) and `markdown` (the built-in worker on a ~50 KB
markdown file with the sqlite chunk store). For each kind it prints, side by side:

  daemon   a real `python -m supervisor` subprocess at concurrency N on its own queue
           (status backend none, metrics off, tracing off, log level WARNING):
           - idle phase: one job at a time, each enqueued only once every slot is blocked
             waiting for work; enqueue-to-start and enqueue-to-done p50/p99;
           - bulk phase: N jobs enqueued at once; jobs/s end to end (first enqueue to last
             finish), enqueue-to-start/done p50/p99 (queueing included), supervisor CPU
             seconds per 1,000 jobs (user+system of the daemon process, children excluded);
           - peak RSS (VmHWM) of the daemon over the whole run.
  before   (with --baseline DIR) the same daemon run from another source tree (an older
           commit, unpacked with `git archive`), with each of its INGEST_SPAWN_MODE values.
  popen    bare subprocess.Popen of the same child at parallelism N (the ceiling); for the
           built-in worker, `python -m ingest_worker`.

`--rounds R` runs every contender R times, interleaved (A B C A B C ...), so that load
from elsewhere on a shared machine falls on all of them; every round is printed, then the
daemon's throughput against each other contender of the same round, as the median and
range over the rounds. Every row also prints where the machine's CPU went during its bulk
phase, per job: the daemon or Popen loop, the fork server, the jobs, Redis, the rest, idle.

Latencies come from the job records' enqueued_at/started_at/finished_at, stamped by the
Redis server's clock in whole milliseconds: a p50 of "1 ms" means 0.5-1.5 ms; the mean is
also shown since quantisation errors average out over many samples. The load average is
printed with every contender: other work on the machine moves these numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from redis.asyncio import Redis

from supervisor.config import DEFAULT_REDIS_URL
from supervisor.queue.jobqueue import JobQueue

ROOT = Path(__file__).resolve().parent.parent
CUSTOM_CHILD = (
    "import sys\n"
    "sys.stdin.buffer.read()\n"
    "for p in range(0, 101, 10):\n"
    "    print(f'PROGRESS: {p} step', flush=True)\n"
)
TEXT = "A tiny text document for the benchmark. It has two sentences."
MARKDOWN_FILE = "doc.md"


def markdown_document(size: int = 50 * 1024) -> str:
    """About `size` bytes of markdown: headings, paragraphs, lists, code."""
    parts: list[str] = []
    i = 0
    while sum(len(p) for p in parts) < size:
        i += 1
        parts.append(
            f"## Section {i}\n\nIngestion pipelines read documents, split them into chunks "
            f"and store each chunk with its embedding. Section {i} says so again, in other "
            "words, so that the chunker has real sentences to cut at whitespace.\n\n"
            f"- point {i}.1 about retrieval\n- point {i}.2 about **ranking**\n\n"
            f"```python\nprint({i})\n```\n\n"
        )
    return "# Benchmark document\n\n" + "".join(parts)


# ---- figures ---------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms_triple(values: Sequence[float]) -> str:
    """p50/p99 (mean) in milliseconds."""
    if not values:
        return "-"
    return (
        f"{pct(values, 0.5) * 1000:.0f}/{pct(values, 0.99) * 1000:.0f}"
        f" ({statistics.fmean(values) * 1000:.1f})"
    )


def load() -> str:
    return "{:.1f}/{:.1f}".format(*os.getloadavg()[:2])


@dataclass
class Row:
    name: str
    rate: float | None = None
    idle_start: list[float] = field(default_factory=list)
    idle_done: list[float] = field(default_factory=list)
    bulk_start: list[float] = field(default_factory=list)
    bulk_done: list[float] = field(default_factory=list)
    cpu_per_1000: float | None = None
    sys_per_1000: float | None = None  # the kernel's share of cpu_per_1000
    peak_rss: int | None = None
    failures: int = 0
    load: str = ""
    note: str = ""
    account: dict[str, float] = field(default_factory=dict)  # CPU ms per bulk job, by whom


def cpu_cell(r: Row) -> str:
    if r.cpu_per_1000 is None:
        return "-"
    return f"{r.cpu_per_1000:.2f} ({r.sys_per_1000 or 0:.2f})"


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n== {title}")
    head = (
        f"{'contender':<22}{'jobs/s':>8}  {'idle start p50/p99 (mean) ms':>29}"
        f"  {'idle done':>16}  {'bulk start':>16}  {'bulk done':>18}"
        f"  {'CPU s/1k (sys)':>14}  {'peak RSS':>9}  {'load 1/5m':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.name:<22}{'-' if r.rate is None else f'{r.rate:.1f}':>8}"
            f"  {ms_triple(r.idle_start):>29}  {ms_triple(r.idle_done):>16}"
            f"  {ms_triple(r.bulk_start):>16}  {ms_triple(r.bulk_done):>18}"
            f"  {cpu_cell(r):>14}"
            f"  {'-' if r.peak_rss is None else f'{r.peak_rss / 2**20:.0f} MiB':>9}"
            f"  {r.load:>9}"
        )
        if r.failures:
            print(f"  !! {r.failures} job(s) did not complete")
        if r.note:
            print(f"  {r.note}")
        if r.account:
            parts = ", ".join(f"{who} {ms:.2f}" for who, ms in r.account.items())
            print(f"  CPU ms per job, whole machine: {parts}")


def print_round_ratios(rows: list[Row], per_round: int) -> None:
    """The daemon's throughput against each other contender of its own round, as the
    median and range over the rounds: neighbours in time share the machine's background
    load, which on a shared host moves every row by more than the differences measured."""
    rounds = [rows[i : i + per_round] for i in range(0, len(rows), per_round)]
    if len(rounds) < 2:
        return
    print("\n  the daemon against each contender of its round: median (min-max)")
    for j, other in enumerate(rounds[0][1:], start=1):
        ratios = [
            ours / theirs * 100
            for ours, theirs in ((r[0].rate, r[j].rate) for r in rounds)
            if ours and theirs
        ]
        if ratios:
            print(
                f"  {rounds[0][0].name} / {other.name}: {statistics.median(ratios):.0f} %"
                f" ({min(ratios):.0f}-{max(ratios):.0f} %, {len(ratios)} rounds)"
            )


# ---- child kinds -----------------------------------------------------------------------


@dataclass(frozen=True)
class ChildKind:
    name: str
    worker_command: str | None  # INGEST_WORKER_COMMAND for the daemon; None: the default
    argv: tuple[str, ...]  # the same child for the Popen ceiling
    source: dict[str, Any]
    env: dict[str, str]  # worker settings, for the daemon and the Popen rows alike


def child_kinds(workdir: Path) -> dict[str, ChildKind]:
    script = workdir / "custom_child.py"
    script.write_text(CUSTOM_CHILD)
    custom = (sys.executable, str(script))
    (workdir / MARKDOWN_FILE).write_text(markdown_document())
    worker = (sys.executable, "-m", "ingest_worker")
    text = {"type": "text", "text": TEXT}
    markdown = {"type": "file", "path": MARKDOWN_FILE}
    sqlite_env = {
        "INGEST_CHUNK_STORE": "sqlite",
        "INGEST_CHUNK_SQLITE_PATH": str(workdir / "chunks.sqlite3"),
        "INGEST_FILE_ROOT": str(workdir),
    }
    return {
        "custom": ChildKind("custom", shlex.join(custom), custom, text, {}),
        "text": ChildKind("text", None, worker, text, {"INGEST_CHUNK_STORE": "none"}),
        "markdown": ChildKind("markdown", None, worker, markdown, sqlite_env),
    }


def job_payload(job_id: str, kind: ChildKind) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "tenant_id": "bench",
        "data_source": kind.source,
        "max_attempts": 1,  # a failure shows at once instead of waiting out a backoff
    }


def child_env(job_id: str, kind: ChildKind) -> dict[str, str]:
    """The environment the daemon gives a child (allowlist), for the Popen rows."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        **kind.env,
        "INGEST_JOB_ID": job_id,
        "INGEST_ATTEMPT": "1",
    }


# ---- where the machine's CPU went ---------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_ticks(pid: int) -> tuple[int, int]:
    """(own user+system, reaped children's user+system) of `pid`, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def machine_ticks() -> tuple[int, int]:
    """(all, idle including iowait) clock ticks of every CPU since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values), values[3] + values[4]


class CpuAccount:
    """CPU per job of the bulk phase, split by process: the daemon (or the Popen loop), its
    long-lived children (the fork server), the jobs (every child reaped meanwhile), Redis,
    the rest of the machine, and idle: on saturated cores idle time is what the hand-offs
    between processes cost."""

    def __init__(self, label: str, pid: int, redis_pid: int | None = None) -> None:
        self.label, self.pid = label, pid
        self.start = process_ticks(pid)
        self.helpers: dict[int, tuple[int, int]] = {}
        for child in psutil.Process(pid).children():
            with contextlib.suppress(OSError):
                self.helpers[child.pid] = process_ticks(child.pid)
        self.redis: tuple[int, tuple[int, int]] | None = None
        if redis_pid is not None:
            with contextlib.suppress(OSError):  # not on this machine (or not visible)
                self.redis = redis_pid, process_ticks(redis_pid)
        self.machine = machine_ticks()

    def per_job_ms(self, jobs: int) -> dict[str, float]:
        total, idle = (b - a for a, b in zip(self.machine, machine_ticks(), strict=True))
        own, jobs_cpu = (b - a for a, b in zip(self.start, process_ticks(self.pid), strict=True))
        out = {self.label: own}
        helpers = 0
        for pid, (helper_own, helper_reaped) in self.helpers.items():
            try:
                now_own, now_reaped = process_ticks(pid)
            except OSError:  # a job that was running at the start: counted as reaped
                continue
            helpers += now_own - helper_own
            jobs_cpu += now_reaped - helper_reaped
        if self.helpers:
            out["fork server"] = helpers
        out["jobs"] = jobs_cpu
        if self.redis is not None:
            out["redis"] = process_ticks(self.redis[0])[0] - self.redis[1][0]
        out["other"] = total - idle - sum(out.values())
        out["idle"] = idle
        return {who: ticks / CLOCK_TICKS / jobs * 1000 for who, ticks in out.items()}


async def redis_pid(client: Redis) -> int:
    return int((await client.info("server"))["process_id"])


# ---- the daemon under test -------------------------------------------------------------


class DaemonUnderTest:
    # How the daemon is started; experiments (ablations) may point this elsewhere.
    command: tuple[str, ...] = (sys.executable, "-m", "supervisor")

    def __init__(
        self,
        redis_url: str,
        queue: str,
        concurrency: int,
        kind: ChildKind,
        cprofile: str | None = None,
        tree: Path = ROOT,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LANGFUSE_", "SUPABASE_", "INGEST_", "OTEL_"))
        }
        env.update(
            REDIS_URL=redis_url,
            INGEST_QUEUE=queue,
            INGEST_CONCURRENCY=str(concurrency),
            INGEST_STATUS_BACKEND="none",
            INGEST_METRICS_PORT="0",
            INGEST_LOG_LEVEL="WARNING",
            INGEST_CHILD_ENV=",".join(kind.env),
            PYTHONUNBUFFERED="1",
            **kind.env,
            **(extra_env or {}),
        )
        if tree != ROOT:  # run the other tree's packages, not the installed ones
            env["PYTHONPATH"] = str(tree)
        if kind.worker_command is not None:
            env["INGEST_WORKER_COMMAND"] = kind.worker_command
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        profiled = () if cprofile is None else ("-m", "cProfile", "-o", cprofile)
        program, *rest = self.command
        self.proc = subprocess.Popen(
            [program, *profiled, *rest],
            env=env,
            cwd=tree,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> tuple[float, float]:
        """(user, system) seconds; children_* (the reaped jobs) left out on purpose."""
        t = self.ps.cpu_times()
        return t.user, t.system

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return self.ps.memory_info().rss

    def local_ports(self) -> set[int]:
        return {c.laddr.port for c in self.ps.net_connections("tcp") if c.laddr}

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        text = self.output().strip()
        if text:
            print("  daemon log (WARNING and above):\n    " + text.replace("\n", "\n    "))
        self.log.close()


async def slots_blocked(client: Redis, daemon: DaemonUnderTest, concurrency: int) -> bool:
    """True when `concurrency` of the daemon's connections are blocked (BLPOP on wake)."""
    ports = daemon.local_ports()
    blocked = 0
    for entry in await client.client_list():
        addr = str(entry.get("addr", ""))
        port = int(addr.rsplit(":", 1)[1]) if ":" in addr else -1
        if port in ports and "b" in str(entry.get("flags", "")):
            blocked += 1
    return blocked >= concurrency


async def wait_idle(client: Redis, daemon: DaemonUnderTest, concurrency: int) -> bool:
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if await slots_blocked(client, daemon, concurrency):
            return True
        daemon.check_alive()
        await asyncio.sleep(0.001)
    return False


async def wait_finished(
    q: JobQueue, ids: list[str], timeout_s: float, daemon: DaemonUnderTest
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = await q.counts()
        if counts["completed"] + counts["failed"] + counts["cancelled"] >= len(ids):
            return
        daemon.check_alive()
        await asyncio.sleep(0.05)
    # A stuck job is a finding, not noise: say what the daemon and its children were doing.
    active, _ = await q.list_jobs("active")
    kids = []
    for p in daemon.ps.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            kids.append(f"{p.pid} {p.status()} {' '.join(p.cmdline())[:120]}")
    raise RuntimeError(
        f"jobs not finished within {timeout_s:.0f}s: {await q.counts()}\n"
        f"active: {[(j.job_id, j.attempt, j.started_at, j.progress) for j in active]}\n"
        f"daemon children: {kids}\ndaemon log: {daemon.output()[-1500:]}"
    )


async def fetch(q: JobQueue, ids: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), 500):
        raws = await q.client.hmget(q.keys.jobs, ids[i : i + 500])
        out += [json.loads(r) for r in raws if r is not None]
    return out


def latencies(records: list[dict[str, Any]]) -> tuple[list[float], list[float], int]:
    start, done, failures = [], [], 0
    for r in records:
        if r.get("state") != "completed":
            failures += 1
            continue
        start.append((r["started_at"] - r["enqueued_at"]) / 1000)
        done.append((r["finished_at"] - r["enqueued_at"]) / 1000)
    return start, done, failures


def start_profiler(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy (pip install py-spy) sampling the daemon, collapsed stacks, no pauses."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--gil",
            "--format",
            "raw",
            "--output",
            out,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)


async def bench_daemon(
    redis_url: str,
    kind: ChildKind,
    concurrency: int,
    samples: int,
    jobs: int,
    profile: str | None = None,
    cprofile: str | None = None,
    name: str = "daemon",
    tree: Path = ROOT,
    extra_env: dict[str, str] | None = None,
) -> Row:
    queue = f"bench-daemon-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(redis_url)
    q = JobQueue(client, queue)
    row = Row(name)
    daemon = DaemonUnderTest(redis_url, queue, concurrency, kind, cprofile, tree, extra_env)
    try:
        # Warm-up: the daemon and its fork server are up, the child's files in the page cache.
        warm = [f"warm-{i}" for i in range(concurrency * 4)]
        await q.enqueue_many([job_payload(j, kind) for j in warm])
        await wait_finished(q, warm, 60, daemon)
        _, _, failed = latencies(await fetch(q, warm))
        if failed:
            raise RuntimeError(f"warm-up jobs failed:\n{daemon.output()}")

        # Idle phase: one job at a time, enqueued only when every slot waits for work.
        ids, not_idle = [], 0
        for i in range(samples):
            if not await wait_idle(client, daemon, concurrency):
                not_idle += 1
            job_id = f"idle-{i:05d}"
            ids.append(job_id)
            await q.enqueue(job_payload(job_id, kind))
            await wait_finished(q, [*warm, *ids], 30, daemon)
        row.idle_start, row.idle_done, row.failures = latencies(await fetch(q, ids))
        if not_idle:
            row.note = f"{not_idle} idle sample(s) enqueued before every slot was blocked"

        # Bulk phase: everything at once; the daemon drains the backlog.
        await wait_idle(client, daemon, concurrency)
        ids = [f"bulk-{i:06d}" for i in range(jobs)]
        spy = None if profile is None else start_profiler(daemon.proc.pid, profile)
        before = daemon.cpu_s()
        account = CpuAccount("daemon", daemon.proc.pid, await redis_pid(client))
        row.load = load()
        for i in range(0, jobs, 500):
            await q.enqueue_many([job_payload(j, kind) for j in ids[i : i + 500]])
        idle_ids = [f"idle-{i:05d}" for i in range(samples)]
        await wait_finished(q, [*warm, *idle_ids, *ids], 600, daemon)
        after = daemon.cpu_s()
        row.account = account.per_job_ms(jobs)
        stop_profiler(spy)
        records = await fetch(q, ids)
        row.bulk_start, row.bulk_done, failed = latencies(records)
        row.failures += failed
        span_ms = max(r["finished_at"] for r in records) - min(r["enqueued_at"] for r in records)
        row.rate = jobs / (span_ms / 1000)
        row.cpu_per_1000 = (after[0] + after[1] - before[0] - before[1]) / jobs * 1000
        row.sys_per_1000 = (after[1] - before[1]) / jobs * 1000
        row.peak_rss = daemon.peak_rss()
        return row
    finally:
        daemon.stop()
        keys = [k async for k in client.scan_iter(match=q.keys.pattern, count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
        await client.aclose()


# ---- the Popen ceiling -----------------------------------------------------------------


def bench_popen(name: str, kind: ChildKind, count: int, parallelism: int) -> Row:
    row = Row(name)
    todo = iter(range(count))
    lock = threading.Lock()
    walls: list[float] = []
    failures = 0
    cwd = tempfile.mkdtemp(prefix="bench-popen-")

    def worker() -> None:
        nonlocal failures
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            job_id = f"popen-{i}"
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                kind.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env(job_id, kind),
                cwd=cwd,
                start_new_session=True,
            )
            out, _err = proc.communicate(json.dumps(job_payload(job_id, kind)).encode())
            ok = proc.returncode == 0 and b"PROGRESS: 100" in out
            with lock:
                walls.append(time.perf_counter() - t0)
                failures += not ok

    me = psutil.Process()
    row.load = load()
    t_cpu = me.cpu_times()
    account = CpuAccount("popen loop", os.getpid())
    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(parallelism)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    t_end = me.cpu_times()
    row.account = account.per_job_ms(count)
    os.rmdir(cwd)
    row.rate = count / elapsed
    row.cpu_per_1000 = (t_end.user + t_end.system - t_cpu.user - t_cpu.system) / count * 1000
    row.sys_per_1000 = (t_end.system - t_cpu.system) / count * 1000
    row.bulk_done = walls  # spawn to reaped, per child
    row.failures = failures
    row.note = "popen: 'bulk done' = one child's spawn-to-reaped; CPU = the bench process"
    return row


# ---- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="bulk-phase jobs (and Popen runs)")
    parser.add_argument("--samples", type=int, default=200, help="idle-phase jobs, one by one")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved runs of each row")
    parser.add_argument(
        "--children", default="custom,text,markdown", help="comma list: custom, text, markdown"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="also run the daemon from this source tree, in each of --baseline-modes",
    )
    parser.add_argument(
        "--baseline-modes",
        default="exec,zygote",
        help="INGEST_SPAWN_MODE values for the baseline tree (empty: leave it unset)",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="py-spy each daemon's bulk phase into PREFIX-<child>-<contender>.txt (collapsed)",
    )
    parser.add_argument(
        "--cprofile",
        metavar="PREFIX",
        help="run each daemon under cProfile into PREFIX-<child>-<contender>.prof (slower)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
    args = parser.parse_args()
    c = args.concurrency
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        kinds = child_kinds(Path(tmp))
        print(
            f"bench_daemon: {args.samples} idle + {args.jobs} bulk jobs per daemon, "
            f"concurrency {c}, {args.rounds} round(s), {os.cpu_count()} cpus, load {load()}"
        )
        for name in args.children.split(","):
            kind = kinds[name.strip()]
            print(f"\n-- child '{kind.name}': {shlex.join(kind.argv)[:160]}")
            bench_popen("warm-up", kind, 20, c)

            # (label, source tree, extra daemon env); no tree: the Popen ceiling
            contenders: list[tuple[str, Path | None, dict[str, str] | None]] = [
                (f"daemon c={c}", ROOT, None)
            ]
            if args.baseline is not None:
                for mode in [m for m in args.baseline_modes.split(",") if m] or [""]:
                    if mode == "zygote" and kind.worker_command is not None:
                        continue  # the baseline's zygote runs only the built-in worker
                    spawn = {"INGEST_SPAWN_MODE": mode} if mode else {}
                    label = f"before {mode} c={c}" if mode else f"before c={c}"
                    contenders.append((label, args.baseline, spawn))
            contenders.append((f"popen p={c}", None, None))
            rows: list[Row] = []
            for _round in range(args.rounds):
                for label, tree, daemon_env in contenders:
                    if tree is None:
                        rows.append(bench_popen(label, kind, args.jobs, c))
                        continue
                    tag = "-".join([kind.name, label.split()[0], *(daemon_env or {}).values()])
                    daemon = bench_daemon(
                        args.redis_url,
                        kind,
                        c,
                        args.samples,
                        args.jobs,
                        None if args.profile is None else f"{args.profile}-{tag}.txt",
                        None if args.cprofile is None else f"{args.cprofile}-{tag}.prof",
                        name=label,
                        tree=tree,
                        extra_env=daemon_env,
                    )
                    rows.append(asyncio.run(daemon))
            for row in rows:
                if row.name.startswith(("daemon", "before")):
                    ceilings = [r.rate for r in rows if r.name.startswith("popen") and r.rate]
                    if row.rate and ceilings:
                        share = row.rate / statistics.fmean(ceilings) * 100
                        row.note = (row.note + "; " if row.note else "") + (
                            f"{share:.0f}% of popen's mean throughput"
                        )
            print_table(f"child '{kind.name}'", rows)
            print_round_ratios(rows, len(contenders))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
