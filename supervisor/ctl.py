"""`ingestctl`: operate a queue from the shell through the same protocol the daemon uses.

Exit codes: 0 success; 1 the job ended failed/cancelled (watch) or the action did not apply;
2 bad usage or invalid payload; 3 Redis unreachable; 4 no such job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError, TimeoutError

from supervisor.connection import redis_client
from supervisor.payload import (
    DEFAULT_SECRET_KEYS,
    PayloadError,
    SecretKeys,
    redact,
    replace_surrogates,
    scrub,
    scrub_value,
    secret_values,
)
from supervisor.protocol import JobQueue, JobRecord
from supervisor.states import FINAL_STATES, JobState, table_status

EXIT_OK, EXIT_NOT_APPLIED, EXIT_USAGE, EXIT_REDIS, EXIT_MISSING = 0, 1, 2, 3, 4


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ingestctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL")
        or os.environ.get("RAG_REDIS_URL")
        or "redis://127.0.0.1:6379/0",
        help="[env REDIS_URL]",
    )
    p.add_argument(
        "--queue",
        default=os.environ.get("INGEST_QUEUE", "ingest"),
        help="[env INGEST_QUEUE, default ingest]",
    )
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("enqueue", help="enqueue a job (JSON, @file, or flags)")
    e.add_argument("payload", nargs="?", help="job JSON, or @path to a JSON file, or - for stdin")
    e.add_argument("--job-id")
    e.add_argument("--tenant")
    src = e.add_mutually_exclusive_group()
    src.add_argument("--text")
    src.add_argument("--file")
    src.add_argument("--url")
    src.add_argument("--crawl", nargs="+", metavar="URL")
    e.add_argument("--crawl-depth", type=int, default=1)
    e.add_argument("--priority", choices=("high", "normal"))
    e.add_argument("--timeout", type=float, dest="timeout_s")
    e.add_argument("--max-attempts", type=int)
    e.add_argument("--delay", type=float, default=0.0, help="seconds before the job is ready")

    s = sub.add_parser("status", help="show one job")
    s.add_argument("job_id")
    s.add_argument("--json", action="store_true")

    w = sub.add_parser("watch", help="live progress until the job ends")
    w.add_argument("job_id")
    w.add_argument("--timeout", type=float, default=None, help="give up after N seconds")

    ls = sub.add_parser("list", help="list jobs in one state")
    ls.add_argument("--state", required=True, choices=[s.value for s in JobState])
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")

    for name in ("cancel", "retry"):
        c = sub.add_parser(name, help=f"{name} a job")
        c.add_argument("job_id")

    sub.add_parser("counts", help="jobs per state")
    sub.add_parser("workers", help="live supervisors from their heartbeats")
    pg = sub.add_parser("purge", help="delete every job in one state")
    pg.add_argument(
        "--state", required=True, choices=[s.value for s in JobState if s is not JobState.ACTIVE]
    )
    return p


def _payload_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.payload:
        raw = args.payload
        if raw == "-":
            raw = sys.stdin.read()
        elif raw.startswith("@"):
            raw = Path(raw[1:]).read_text()
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PayloadError("payload", f"is not valid JSON ({exc.msg})") from None
        if not isinstance(payload, dict):
            raise PayloadError("payload", "must be a JSON object")
    else:
        payload = {}
    if args.job_id:
        payload["job_id"] = args.job_id
    if args.tenant:
        payload["tenant_id"] = args.tenant
    if args.text is not None:
        payload["data_source"] = {"type": "text", "text": args.text}
    elif args.file:
        payload["data_source"] = {"type": "file", "path": args.file}
    elif args.url:
        payload["data_source"] = {"type": "url", "url": args.url}
    elif args.crawl:
        payload["data_source"] = {
            "type": "crawl",
            "urls": args.crawl,
            "crawl_depth": args.crawl_depth,
        }
    for key in ("priority", "timeout_s", "max_attempts"):
        if getattr(args, key) is not None:
            payload[key] = getattr(args, key)
    payload.setdefault("job_id", f"job-{int(time.time() * 1000)}-{os.getpid()}")
    return payload


def _secret_keys() -> SecretKeys:
    extra = os.environ.get("INGEST_SECRET_KEYS", "").replace(",", " ").split()
    return SecretKeys((*DEFAULT_SECRET_KEYS, *extra))


def _show(job: JobRecord) -> dict[str, Any]:
    """A job as printed: secrets redacted and scrubbed, every string printable as UTF-8."""
    out = job.to_dict()
    out["status"] = table_status(job.state).value
    keys = _secret_keys()
    found = secret_values(job.payload, keys) if job.payload is not None else []
    if out.get("payload") is not None:
        out["payload"] = redact(out["payload"], keys)
    for key in ("error", "progress_message"):
        if out.get(key):
            out[key] = scrub(out[key], found)
    out["result"] = scrub_value(redact(out.get("result"), keys), found)
    shown: dict[str, Any] = replace_surrogates(out)
    return shown


def _bar(pct: float, width: int = 30) -> str:
    filled = int(width * pct / 100)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {pct:5.1f}%"


async def _watch(q: JobQueue, job_id: str, give_up_s: float | None) -> int:
    deadline = None if give_up_s is None else time.monotonic() + give_up_s
    last = "$"
    job = await q.get(job_id)
    if job is None:
        print(f"no job {job_id}", file=sys.stderr)
        return EXIT_MISSING
    tty = sys.stdout.isatty()
    while True:
        line = f"{job_id} {job.state.value:<9} {_bar(job.progress)} {job.progress_message or ''}"
        print(("\r" + line[:120]) if tty else line, end="" if tty else "\n", flush=True)
        if job.state in FINAL_STATES:
            if tty:
                print()
            if job.error:
                print(f"error: {job.error}")
            return EXIT_OK if job.state is JobState.COMPLETED else EXIT_NOT_APPLIED
        if deadline is not None and time.monotonic() > deadline:
            if tty:
                print()
            return EXIT_NOT_APPLIED
        entries = await q.read_events(last, block_ms=1000, count=200)
        if entries:
            last = entries[-1][0]
        fresh = await q.get(job_id)
        if fresh is None:
            print(f"\njob {job_id} expired", file=sys.stderr)
            return EXIT_MISSING
        job = fresh


async def _run(args: argparse.Namespace) -> int:
    client = redis_client(args.redis_url)
    q = JobQueue(client, args.queue)
    try:
        cmd = args.command
        if cmd == "enqueue":
            res = await q.enqueue(_payload_from_args(args), delay_s=args.delay)
            print(
                json.dumps({"job_id": res.job_id, "created": res.created, "state": res.state.value})
            )
            return EXIT_OK
        if cmd == "status":
            job = await q.get(args.job_id, with_payload=True)
            if job is None:
                print(f"no job {args.job_id}", file=sys.stderr)
                return EXIT_MISSING
            shown = _show(job)
            if args.json:
                print(json.dumps(shown, default=str))
            else:
                for key in (
                    "job_id",
                    "state",
                    "status",
                    "progress",
                    "progress_message",
                    "attempt",
                    "max_attempts",
                    "stalls",
                    "worker_id",
                    "error",
                    "result",
                ):
                    print(f"{key:>16}: {shown.get(key)}")
            return EXIT_OK
        if cmd == "watch":
            return await _watch(q, args.job_id, args.timeout)
        if cmd == "list":
            jobs, _cursor = await q.list_jobs(args.state, limit=args.limit)
            for job in jobs:
                print(
                    json.dumps(_show(job), default=str)
                    if args.json
                    else f"{job.job_id}\t{job.state.value}\t{job.attempt}/{job.max_attempts}\t"
                    f"{job.progress:.0f}%\t{job.error or ''}"
                )
            return EXIT_OK
        if cmd == "cancel":
            outcome = await q.cancel(args.job_id)
            print(outcome)
            return {"cancelled": EXIT_OK, "requested": EXIT_OK, "missing": EXIT_MISSING}.get(
                outcome, EXIT_NOT_APPLIED
            )
        if cmd == "retry":
            outcome = await q.retry(args.job_id)
            print(outcome)
            return {"waiting": EXIT_OK, "missing": EXIT_MISSING}.get(outcome, EXIT_NOT_APPLIED)
        if cmd == "counts":
            print(json.dumps(await q.counts()))
            return EXIT_OK
        if cmd == "workers":
            for w in await q.live_workers():
                print(json.dumps(w))
            return EXIT_OK
        if cmd == "purge":
            print(await q.purge(args.state))
            return EXIT_OK
        raise AssertionError(cmd)
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except PayloadError as exc:
        print(f"ingestctl: invalid job: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConnectionError, TimeoutError) as exc:
        print(f"ingestctl: Redis unreachable at {args.redis_url}: {exc}", file=sys.stderr)
        return EXIT_REDIS
    except (ValueError, OSError) as exc:
        print(f"ingestctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
