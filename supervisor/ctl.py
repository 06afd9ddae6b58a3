"""`ingestctl`: operate a queue from the shell through the same protocol the daemon uses.

Output is for people by default; every subcommand takes --json for scripts, with the field
names of the HTTP API's responses. A new subcommand is a handler plus one `command(...)` line.

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
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError, OutOfMemoryError, ReadOnlyError, TimeoutError

from supervisor import ctl_format as fmt
from supervisor.config import (
    DEFAULT_QUEUE,
    DEFAULT_REDIS_URL,
    SharedConfig,
    load_shared_config,
    mask_secrets,
)
from supervisor.queue.jobqueue import JobQueue, JobRecord
from supervisor.queue.payload import PayloadError
from supervisor.queue.redaction import DEFAULT_SECRET_KEYS, SecretKeys
from supervisor.queue.states import FINAL_STATES, JobState, table_status
from supervisor.status import open_backend
from supervisor.status.backend import StatusStoreError
from supervisor.status.sync import status_sync

EXIT_OK, EXIT_NOT_APPLIED, EXIT_USAGE, EXIT_REDIS, EXIT_MISSING = 0, 1, 2, 3, 4

# One subcommand: runs against the queue, prints (JSON with --json), returns the exit code.
Handler = Callable[[JobQueue, argparse.Namespace], Awaitable[int]]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ingestctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    # Everything else shared (Cluster, Sentinel, secret keys, status store) comes from the
    # same environment variables the daemon and the API read (`supervisor.config`).
    p.add_argument("--redis-url", help=f"[env REDIS_URL, default {DEFAULT_REDIS_URL}]")
    p.add_argument("--queue", help=f"[env INGEST_QUEUE, default {DEFAULT_QUEUE}]")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=summary, description=summary)
        c.add_argument(
            "--json", action="store_true", help="print JSON shaped like the API's response"
        )
        c.set_defaults(handler=handler)
        return c

    e = command("enqueue", _enqueue, "enqueue a job (JSON, @file, or flags)")
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

    command("status", _status, "show one job").add_argument("job_id")

    w = command("watch", _watch, "live progress until the job ends (--json: a line per change)")
    w.add_argument("job_id")
    w.add_argument("--timeout", type=float, default=None, help="give up after N seconds")

    ls = command("list", _list, "list jobs in one state")
    ls.add_argument("--state", required=True, choices=[s.value for s in JobState])
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument(
        "--cursor",
        default="0",
        help="where the page starts: the last page's next_cursor",
    )

    command("cancel", _cancel, "cancel a job").add_argument("job_id")
    command("retry", _retry, "run a failed or cancelled job again").add_argument("job_id")
    command("counts", _counts, "jobs per state")
    command("workers", _workers, "live supervisors from their heartbeats")
    command(
        "status-sync",
        _status_sync,
        "compare every job in Redis with its status row; re-send and write the stale ones",
    )
    pg = command("purge", _purge, "delete every job in one state")
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
        except RecursionError:
            raise PayloadError("payload", "is nested too deep to read") from None
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


def _secret_keys(args: argparse.Namespace) -> SecretKeys:
    config: SharedConfig = args.config
    return SecretKeys((*DEFAULT_SECRET_KEYS, *config.secret_keys))


def _emit(args: argparse.Namespace, doc: Any, human: str) -> None:
    print(fmt.dumps(doc) if args.json else human, flush=True)


async def _now(q: JobQueue) -> float:
    """Now on the clock the queue's times are stamped with (Redis's), for ages."""
    return await q.server_time_ms() / 1000


async def _enqueue(q: JobQueue, args: argparse.Namespace) -> int:
    res = await q.enqueue(_payload_from_args(args), delay_s=args.delay)
    status = table_status(res.state).value
    doc = {"job_id": res.job_id, "created": res.created, "state": res.state.value, "status": status}
    if res.created:
        human = f"enqueued {res.job_id} ({res.state.value})"
    else:
        human = f"{res.job_id} is already known ({res.state.value}); nothing enqueued"
    _emit(args, doc, human)
    return EXIT_OK


async def _get(q: JobQueue, job_id: str, *, with_payload: bool = False) -> JobRecord | None:
    job = await q.get(job_id, with_payload=with_payload)
    if job is None:
        _complain(f"no job {job_id}")
    return job


async def _status(q: JobQueue, args: argparse.Namespace) -> int:
    job = await _get(q, args.job_id, with_payload=True)
    if job is None:
        return EXIT_MISSING
    doc = fmt.job_doc(job, q.queue, _secret_keys(args))
    holder_live = await _holder_live(q, job.worker_id) if job.state is JobState.ACTIVE else None
    _emit(args, doc, fmt.job_text(job, doc, await _now(q), holder_live))
    return EXIT_OK


async def _holder_live(q: JobQueue, worker_id: str | None) -> bool | None:
    """Whether the supervisor holding a job still beats (None: no holder named)."""
    if worker_id is None:
        return None
    return any(w.get("worker_id") == worker_id for w in await q.live_workers())


def _bar(pct: float, width: int = 30) -> str:
    filled = int(width * pct / 100)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {pct:5.1f}%"


async def _watch(q: JobQueue, args: argparse.Namespace) -> int:
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    last_event = "$"
    job = await _get(q, args.job_id)
    if job is None:
        return EXIT_MISSING
    tty = sys.stdout.isatty() and not args.json
    secret_keys = _secret_keys(args)
    shown: str | None = None
    while True:
        doc = fmt.job_doc(job, q.queue, secret_keys)
        if args.json:
            line = fmt.dumps(doc)
        else:
            message = fmt.text(doc["message"]) if doc["message"] else ""
            line = f"{job.job_id} {job.state.value:<9} {_bar(job.progress)} {message}".rstrip()
        if line != shown:
            print(("\r" + line[:120]) if tty else line, end="" if tty else "\n", flush=True)
            shown = line
        if job.state in FINAL_STATES:
            if tty:
                print()
            if doc["error"] and not args.json:
                print(f"error: {fmt.text(doc['error'], one_line=False)}")
            return EXIT_OK if job.state is JobState.COMPLETED else EXIT_NOT_APPLIED
        if deadline is not None and time.monotonic() > deadline:
            if tty:
                print()
            return EXIT_NOT_APPLIED
        entries = await q.read_events(last_event, block_ms=1000, count=200)
        if entries:
            last_event = entries[-1][0]
        fresh = await q.get(args.job_id)
        if fresh is None:
            print(file=sys.stderr)
            _complain(f"job {args.job_id} expired")
            return EXIT_MISSING
        job = fresh


def _list_cursor(raw: str, state: str) -> int:
    """`--cursor`: a page's next_cursor (`state:n`, of the same state) or `n`, n >= 0."""
    named, _, number = raw.rpartition(":")
    if (named and named != state) or not number.isdigit():
        raise ValueError(f"--cursor {raw!r}: give the next_cursor of a {state} page")
    return int(number)


async def _list(q: JobQueue, args: argparse.Namespace) -> int:
    start = _list_cursor(args.cursor, args.state)
    jobs, cursor = await q.list_jobs(args.state, limit=args.limit, cursor=start)
    secret_keys = _secret_keys(args)
    docs = [fmt.job_doc(j, q.queue, secret_keys) for j in jobs]
    doc = {"jobs": docs, "next_cursor": None if cursor is None else f"{args.state}:{cursor}"}
    human = fmt.jobs_text(jobs, docs, await _now(q)) if jobs else f"no {args.state} jobs"
    if cursor is not None:
        human += f"\n(first {len(jobs)} shown; --cursor {cursor} for the next page)"
    _emit(args, doc, human)
    return EXIT_OK


async def _cancel(q: JobQueue, args: argparse.Namespace) -> int:
    outcome = await q.cancel(args.job_id)
    requested = f"asked the supervisor running {args.job_id} to stop it"
    if outcome == "requested":
        job = await q.get(args.job_id)
        if job is not None and await _holder_live(q, job.worker_id) is False:
            requested = (
                f"cancel of {args.job_id} recorded; its supervisor is not live, so a reaper "
                f"cancels it: its lease {fmt.lease_text(job, await _now(q))}"
            )
    human = {
        "cancelled": f"cancelled {args.job_id}",
        "requested": requested,
        "missing": f"no job {args.job_id}",
    }.get(outcome, f"{args.job_id} is {outcome}; it cannot be cancelled")
    _emit(args, {"job_id": args.job_id, "outcome": outcome}, human)
    return {"cancelled": EXIT_OK, "requested": EXIT_OK, "missing": EXIT_MISSING}.get(
        outcome, EXIT_NOT_APPLIED
    )


async def _retry(q: JobQueue, args: argparse.Namespace) -> int:
    outcome = await q.retry(args.job_id)
    human = {
        "requeued": f"{args.job_id} is waiting to run again",
        "waiting": f"{args.job_id} is already waiting to run",
        "missing": f"no job {args.job_id}",
    }.get(outcome, f"{args.job_id} is {outcome}; only failed or cancelled jobs can retry")
    state = "waiting" if outcome == "requeued" else outcome
    _emit(args, {"job_id": args.job_id, "state": state}, human)
    # Already waiting is success, as cancelling a cancelled job is.
    done = {"requeued": EXIT_OK, "waiting": EXIT_OK, "missing": EXIT_MISSING}
    return done.get(outcome, EXIT_NOT_APPLIED)


async def _counts(q: JobQueue, args: argparse.Namespace) -> int:
    counts = await q.counts()
    _emit(args, counts, fmt.counts_text(counts))
    return EXIT_OK


async def _workers(q: JobQueue, args: argparse.Namespace) -> int:
    doc = fmt.workers_doc(await q.live_workers())
    _emit(args, doc, fmt.workers_text(doc, await _now(q)))
    return EXIT_OK


async def _purge(q: JobQueue, args: argparse.Namespace) -> int:
    removed = await q.purge(args.state)
    doc = {"queue": q.queue, "state": args.state, "removed": removed}
    _emit(args, doc, f"removed {removed} {args.state} job(s) from queue {q.queue}")
    return EXIT_OK


async def _status_sync(q: JobQueue, args: argparse.Namespace) -> int:
    from supervisor.status.factory import resolve_kind

    config = args.config
    kind = resolve_kind(
        config.status_backend,
        supabase_url=config.supabase_url,
        supabase_key=config.supabase_key,
        dsn=config.status_dsn,
    )
    if config.status_backend == "auto" and kind == "sqlite":
        # A shell without the daemons' settings would otherwise fill a stray local file.
        raise ValueError(
            "status-sync: no status store configured (set SUPABASE_URL and "
            "SUPABASE_SERVICE_ROLE_KEY, or INGEST_STATUS_DSN, or INGEST_STATUS_BACKEND=sqlite "
            "with INGEST_STATUS_SQLITE_PATH)"
        )
    backend = open_backend(config)
    try:
        report = await status_sync(q, backend)
    finally:
        await backend.aclose()
    lines = [
        f"store {report.store}: checked {report.checked} job(s); "
        f"{len(report.missing) + len(report.behind)} row(s) missing or behind"
        + (f", {len(report.ahead)} ahead" if report.ahead else "")
        + (f", {len(report.lost)} of jobs Redis lost" if report.lost else "")
    ]
    for label, ids in (
        ("missing", report.missing),
        ("behind", report.behind),
        ("ahead of Redis (it lost writes)", report.ahead),
        ("another tenant's row, left alone", report.foreign),
        ("said queued or processing, job lost by Redis: failed", report.lost),
        ("record no row can be made of (see the log): row left as it is", report.unreadable),
    ):
        if ids:
            more = " ..." if len(ids) > 20 else ""
            lines.append(f"  {label} ({len(ids)}): {', '.join(ids[:20])}{more}")
    lines.append(f"wrote {report.written} row(s)")
    _emit(args, report.to_json(), "\n".join(lines))
    return EXIT_NOT_APPLIED if report.unreadable else EXIT_OK


async def _run(args: argparse.Namespace) -> int:
    config: SharedConfig = args.config
    client = config.redis()
    try:
        handler: Handler = args.handler
        queue = config.job_queue(client)
        return await handler(queue, args)
    finally:
        await client.aclose()


def _complain(message: str) -> None:
    """One line on stderr, with no password of a connection string in it. Job ids, payload
    keys and server errors in it may come from a tenant: control characters are replaced,
    so none reaches the operator's terminal."""
    print(f"ingestctl: {fmt.text(mask_secrets(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flags = {"redis_url": args.redis_url, "queue": args.queue}
    try:
        args.config = load_shared_config(
            os.environ, {k: v for k, v in flags.items() if v is not None}
        )
        return asyncio.run(_run(args))
    except PayloadError as exc:
        _complain(f"invalid job: {exc}")
        return EXIT_USAGE
    except StatusStoreError as exc:  # status-sync: the store refused or is out of reach
        _complain(f"status store: {exc}")
        return EXIT_NOT_APPLIED
    except (ConnectionError, TimeoutError) as exc:
        _complain(f"Redis unreachable at {args.config.redis_url}: {exc}")
        return EXIT_REDIS
    except (ReadOnlyError, OutOfMemoryError) as exc:  # answers, but takes no write now
        _complain(f"Redis at {args.config.redis_url} refuses writes: {exc}")
        return EXIT_REDIS
    except (ValueError, OSError) as exc:  # SettingsError and MissingExtraError too: one line
        _complain(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
