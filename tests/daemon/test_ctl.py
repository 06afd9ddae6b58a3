"""ingestctl as people and scripts use it: the real console script against real Redis (and a
real daemon where one is needed), human output by default, --json with the API's field names,
meaningful exit codes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from api.models import Job, Workers
from supervisor.queue.states import JobState
from tests.conftest import REDIS_URL
from tests.daemon.conftest import SyncQueue, job, wait_until
from tests.redis_server import PrivateRedis, free_port

AGE = r"(\d+(\.\d)?m?s|\d+m( \d+s)?) ago"
INGESTCTL = str(Path(sys.executable).parent / "ingestctl")


def ctl(
    queue: str,
    *args: str,
    redis_url: str = REDIS_URL,
    stdin: str | None = None,
    timeout: float = 30,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INGESTCTL, "--redis-url", redis_url, "--queue", queue, *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def test_bad_input_and_an_unreachable_store_get_one_line_not_a_traceback(
    queue_name: str, q: SyncQueue, tmp_path: Path
) -> None:
    base = ["enqueue", "--job-id", "odd", "--tenant", "t", "--text", "x"]
    for delay in ("inf", "nan", "1e20", "-1"):
        r = ctl(queue_name, *base, "--delay", delay)
        assert (r.returncode, "Traceback" in r.stderr) == (2, False), r.stderr
        assert "delay_s" in r.stderr
    deep = tmp_path / "deep.json"
    deep.write_text('{"job_id": "deep", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}")
    r = ctl(queue_name, "enqueue", f"@{deep}")
    assert (r.returncode, "Traceback" in r.stderr) == (2, False), r.stderr
    assert q.get("odd") is None and q.get("deep") is None
    nowhere = {
        "INGEST_STATUS_BACKEND": "postgres",
        "INGEST_STATUS_DSN": "postgresql://127.0.0.1:1/x",
    }
    r = ctl(queue_name, "status-sync", env=nowhere)
    assert (r.returncode, "Traceback" in r.stderr) == (1, False), r.stderr
    assert r.stderr.startswith("ingestctl: status store") and len(r.stderr.splitlines()) == 1


def test_enqueue_from_flags_json_file_and_stdin(
    queue_name: str, q: SyncQueue, tmp_path: Path
) -> None:
    r = ctl(
        queue_name,
        "enqueue",
        "--job-id",
        "c1",
        "--tenant",
        "acme",
        "--text",
        "hi",
        "--priority",
        "high",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "job_id": "c1",
        "created": True,
        "state": "waiting",
        "status": "queued",
    }
    again = ctl(queue_name, "enqueue", "--job-id", "c1", "--tenant", "acme", "--text", "hi")
    assert again.stdout.strip() == "c1 is already known (waiting); nothing enqueued"
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job("c2")))
    assert ctl(queue_name, "enqueue", f"@{path}").returncode == 0
    assert ctl(queue_name, "enqueue", "-", stdin=json.dumps(job("c3"))).returncode == 0
    assert q.counts()["waiting"] == 3
    assert q.get("c1").priority == "high"


def test_invalid_job_exit_2_and_nothing_stored(queue_name: str, q: SyncQueue) -> None:
    r = ctl(queue_name, "enqueue", "--job-id", "bad id!", "--tenant", "a", "--text", "x")
    assert r.returncode == 2
    assert "job_id" in r.stderr
    r = ctl(queue_name, "enqueue", "{not json")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    assert sum(q.counts().values()) == 0


def test_status_list_counts_cancel_retry_purge(queue_name: str, q: SyncQueue) -> None:
    q.enqueue({**job("s1"), "metadata": {"trial_token": "tok-secret-1"}})
    r = ctl(queue_name, "status", "s1", "--json")
    assert r.returncode == 0
    shown = json.loads(r.stdout)
    assert shown["state"] == "waiting" and shown["status"] == "queued"
    assert "tok-secret-1" not in r.stdout
    assert ctl(queue_name, "status", "nope").returncode == 4
    assert "s1" in ctl(queue_name, "list", "--state", "waiting").stdout
    assert json.loads(ctl(queue_name, "counts", "--json").stdout)["waiting"] == 1
    r = ctl(queue_name, "cancel", "s1", "--json")
    assert (r.returncode, json.loads(r.stdout)) == (0, {"job_id": "s1", "outcome": "cancelled"})
    assert ctl(queue_name, "cancel", "s1").returncode == 0  # idempotent
    q.enqueue(job("done"))
    claim = q.claim("w", lease_s=5, timeout_s=5)
    assert q.complete(claim.job.job_id, claim.token, None)
    r = ctl(queue_name, "cancel", "done")
    # cannot cancel a finished job
    assert (r.returncode, r.stdout.strip()) == (1, "done is completed; it cannot be cancelled")
    r = ctl(queue_name, "retry", "s1", "--json")
    assert json.loads(r.stdout) == {"job_id": "s1", "state": "waiting"}
    assert q.get("s1").state is JobState.WAITING
    assert ctl(queue_name, "retry", "ghost").returncode == 4
    q.cancel("s1")
    r = ctl(queue_name, "purge", "--state", "cancelled", "--json")
    assert json.loads(r.stdout) == {"queue": queue_name, "state": "cancelled", "removed": 1}
    assert q.get("s1") is None


def test_a_job_whose_supervisor_is_gone_is_not_shown_as_running_normally(
    queue_name: str, q: SyncQueue
) -> None:
    """The holder died (no heartbeat): status says so and when the lease runs out, and a
    cancel does not claim to have asked a supervisor that is not there."""
    q.enqueue(job("orphaned"))
    assert q.claim("host:i9:999", lease_s=120, timeout_s=5) is not None  # never beats
    r = ctl(queue_name, "status", "orphaned")
    assert r.returncode == 0, r.stderr
    assert re.search(r"worker_id +host:i9:999 \(no live heartbeat", r.stdout), r.stdout
    assert re.search(r"lease +runs out in (1m 5\ds|2m)\b", r.stdout), r.stdout
    r = ctl(queue_name, "cancel", "orphaned")
    assert r.returncode == 0, r.stderr
    assert "not live" in r.stdout and "lease runs out" in r.stdout, r.stdout
    assert "asked the supervisor" not in r.stdout


def test_watch_follows_a_running_job_to_its_end(
    start_daemon, queue_name: str, q: SyncQueue
) -> None:
    q.enqueue(job("w1", sleep=1))
    q.enqueue(job("w2", exit=65))
    start_daemon()
    r = ctl(queue_name, "watch", "w1", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("w1")]
    assert lines[-1].split()[1] == "completed"
    wait_until(lambda: q.get("w2").state is JobState.FAILED, 30, "w2 failed")
    assert ctl(queue_name, "watch", "w2").returncode == 1


def test_workers_table_and_json(start_daemon, queue_name: str) -> None:
    pool = start_daemon()  # instance 1 of a pool
    alone = start_daemon(INGEST_INSTANCE="")  # no instance: the id is host:pid
    pool.wait_ready()
    alone.wait_ready()
    host = socket.gethostname()

    def both() -> dict | None:
        doc = json.loads(ctl(queue_name, "workers", "--json").stdout)
        return doc if len(doc["workers"]) == 2 else None

    doc = wait_until(both, 10, "two heartbeats")
    Workers.model_validate(doc)  # the API's /workers shape
    ids = {w["pid"]: w["worker_id"] for w in doc["workers"]}
    assert ids == {pool.pid: f"{host}:i1:{pool.pid}", alone.pid: f"{host}:{alone.pid}"}
    assert (doc["total_slots"], doc["busy_slots"]) == (4, 0)

    r = ctl(queue_name, "workers")
    assert r.returncode == 0, r.stderr
    head, *rows, summary = r.stdout.splitlines()
    assert head.split() == ["WORKER_ID", "HOST", "PID", "SLOTS", "STARTED", "HEARTBEAT", "STATE"]
    assert summary == "2 live, 0/4 slots busy"
    for row in rows:
        cells = re.split(r"\s{2,}", row)
        assert cells[0] in ids.values() and cells[1] == host
        assert int(cells[2]) in ids and cells[3] == "0/2"
        assert re.fullmatch(AGE, cells[4]), cells  # started, as an age
        assert re.fullmatch(AGE, cells[5]), cells  # last heartbeat
        assert cells[6] == "serving"
    # Columns line up: each header starts where its column's cells start.
    starts = [head.index(h) for h in ("HOST", "PID", "SLOTS", "STARTED", "HEARTBEAT", "STATE")]
    for row in rows:
        assert all(row[i - 2 : i] == "  " and row[i] != " " for i in starts), row
    assert ":i-:" not in r.stdout
    assert not re.search(r"\b\d{10}\.\d+\b", r.stdout), r.stdout  # no epoch floats


def test_status_speaks_people_and_json_speaks_the_api(queue_name: str, q: SyncQueue) -> None:
    q.enqueue({**job("p1"), "metadata": {"trial_token": "tok-secret-2"}})
    claim = q.claim("host-a:4242", lease_s=30, timeout_s=5)
    assert q.progress("p1", claim.token, 100, "done")
    assert q.complete("p1", claim.token, {"pages": 20, "ok": True, "skipped": None})
    r = ctl(queue_name, "status", "p1")
    assert r.returncode == 0, r.stderr
    shown = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in r.stdout.splitlines())
    assert shown["result"] == '{"pages": 20, "ok": true, "skipped": null}'  # JSON, not repr
    assert shown["error"] == "-" and shown["due_at"] == "-"  # nothing is "-", never None
    assert shown["status"] == "completed" and shown["message"] == "done"
    assert shown["progress"] == "100%" and shown["attempt"] == "1 of 3"
    assert shown["worker_id"] == "host-a:4242" and shown["cancel_requested"] == "no"
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
    assert re.fullmatch(rf"{stamp} \({AGE}\)", shown["finished_at"]), shown["finished_at"]
    assert re.fullmatch(r"[\d.]+m?s", shown["duration"]), shown["duration"]
    assert "None" not in r.stdout and "{'" not in r.stdout and "tok-secret-2" not in r.stdout

    doc = json.loads(ctl(queue_name, "status", "p1", "--json").stdout)
    assert set(doc) - {"stalls"} == set(Job.model_fields)  # the API's field names
    api = Job.model_validate(doc)
    assert api.result == {"pages": 20, "ok": True, "skipped": None} and api.message == "done"
    assert doc["finished_at"].endswith("Z") and "tok-secret-2" not in json.dumps(doc)


def test_hostile_job_text_cannot_drive_the_terminal(queue_name: str, q: SyncQueue) -> None:
    q.enqueue(job("h1", max_attempts=1))
    claim = q.claim("w", lease_s=30, timeout_s=5)
    q.fail("h1", claim.token, "boom\x1b[2J\x1b]0;owned\x07\rgone", retryable=False, attempt=1)
    for args in (("status", "h1"), ("list", "--state", "failed"), ("watch", "h1")):
        r = ctl(queue_name, *args)
        assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\r" not in r.stdout, args
        assert "boom" in r.stdout, args


def test_every_subcommand_takes_json(queue_name: str, q: SyncQueue, tmp_path: Path) -> None:
    q.enqueue(job("j1"))
    status_env = {
        "INGEST_STATUS_BACKEND": "sqlite",
        "INGEST_STATUS_SQLITE_PATH": str(tmp_path / "status.sqlite3"),
    }
    runs = {
        "enqueue": ("enqueue", "--job-id", "j2", "--tenant", "t", "--text", "x"),
        "status": ("status", "j1"),
        "watch": ("watch", "j1", "--timeout", "0"),
        "list": ("list", "--state", "waiting"),
        "cancel": ("cancel", "j2"),
        "retry": ("retry", "j2"),
        "counts": ("counts",),
        "workers": ("workers",),
        "purge": ("purge", "--state", "completed"),
        "status-sync": ("status-sync",),
    }
    helptext = ctl(queue_name, "--help").stdout
    listed = set(re.search(r"\{([a-z,-]+)\}", helptext).group(1).split(","))
    assert listed == set(runs), "a subcommand without a --json check here"
    for name, args in runs.items():
        r = ctl(queue_name, *args, "--json", env=status_env)
        assert r.returncode in (0, 1), (name, r.stderr)
        for line in r.stdout.splitlines():
            json.loads(line)
    page = json.loads(ctl(queue_name, "list", "--state", "waiting", "--json").stdout)
    assert [j["job_id"] for j in page["jobs"]] == ["j1", "j2"] and page["next_cursor"] is None
    assert (
        json.loads(ctl(queue_name, "list", "--state", "waiting", "--limit", "1", "--json").stdout)[
            "next_cursor"
        ]
        == "waiting:1"
    )
    second = ctl(queue_name, "list", "--state", "waiting", "--cursor", "waiting:1", "--json")
    assert [j["job_id"] for j in json.loads(second.stdout)["jobs"]] == ["j2"]
    for wrong in ("failed:1", "-5", "x"):  # another state's cursor, or not a cursor at all
        r = ctl(queue_name, "list", "--state", "waiting", "--cursor", wrong)
        assert r.returncode == 2 and "--cursor" in r.stderr, (wrong, r.stderr)


@pytest.mark.parametrize("args", [("counts",), ("status", "x")])
def test_redis_unreachable_exit_3(queue_name: str, args: tuple[str, ...]) -> None:
    r = ctl(queue_name, *args, redis_url="redis://:hunter2@127.0.0.1:1/0")
    assert r.returncode == 3
    assert "Redis unreachable at redis://:***@127.0.0.1:1/0" in r.stderr
    assert "hunter2" not in r.stderr


@pytest.mark.parametrize(
    "url",
    [
        "redis://default:pa@ss-SECRET-1@127.0.0.1:1/0",  # an @ in the password
        "redis://127.0.0.1:1/0?password=SECRET-2",  # the password as a query parameter
    ],
)
def test_no_part_of_a_redis_password_reaches_the_screen(queue_name: str, url: str) -> None:
    r = ctl(queue_name, "counts", redis_url=url)
    assert r.returncode == 3 and "Redis unreachable at redis://" in r.stderr
    assert "SECRET" not in r.stderr, r.stderr


def test_a_payload_error_reaches_the_terminal_without_control_characters(
    queue_name: str, tmp_path: Path
) -> None:
    """Field names in a refusal come from the payload's own keys: escape sequences there
    must not retitle, clear or recolour the operator's terminal."""
    evil = {**job("evil"), "\u001b]0;PWNED\u0007\u001b[2J\u001b[31mX": 1}
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(evil))
    r = ctl(queue_name, "enqueue", f"@{path}")
    assert r.returncode == 2 and "invalid job" in r.stderr
    assert not [c for c in r.stderr if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F]


def test_another_tenants_job_id_is_a_clear_error(queue_name: str, q: SyncQueue) -> None:
    from supervisor.queue.client import enqueue_ingestion_job
    from supervisor.queue.payload import TenantConflict

    q.enqueue({**job("shared"), "data_source": {"type": "text", "text": "A's private text"}})
    r = ctl(queue_name, "enqueue", "--job-id", "shared", "--tenant", "tenant-b", "--text", "x")
    assert r.returncode == 2, r.stderr
    assert "another tenant" in r.stderr and "Traceback" not in r.stderr
    assert "A's private text" not in r.stdout + r.stderr
    with pytest.raises(TenantConflict, match="another tenant"):
        enqueue_ingestion_job(
            "shared",
            "tenant-b",
            {"type": "text", "text": "x"},
            queue=queue_name,
            redis_url=REDIS_URL,
        )
    assert q.get("shared").tenant_id == "tenant-a"


def test_queue_name_with_a_trailing_newline_is_refused(queue_name: str) -> None:
    r = ctl(queue_name + "\n", "counts")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "queue name" in r.stderr


def test_client_sends_the_old_producers_trial_token(queue_name: str, q: SyncQueue) -> None:
    from supervisor.queue.client import enqueue_ingestion_job

    res = enqueue_ingestion_job(
        "old-1",
        "tn_xyz",
        {"type": "crawl", "urls": ["https://example.com"], "crawl_depth": 2},
        priority="high",
        trial_token="tr_client_secret_9",
        queue=queue_name,
        redis_url=REDIS_URL,
    )
    assert res.created
    claim = q.claim("w", lease_s=5, timeout_s=5)
    assert claim.payload["trial_token"] == "tr_client_secret_9"
    r = ctl(queue_name, "status", "old-1", "--json")
    assert r.returncode == 0 and "tr_client_secret_9" not in r.stdout


def test_producers_bound_the_status_outbox_like_the_daemons(queue_name: str, q: SyncQueue) -> None:
    """INGEST_STATUS_OUTBOX_MAX reaches every producer: at twice the bound an enqueue's
    `queued` row is no longer recorded in the outbox (the reconciler restores it)."""
    import redis

    from supervisor.queue.keys import QueueKeys

    q.enqueue(job("fill-1"))
    q.enqueue(job("fill-2"))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        outbox = QueueKeys(queue_name).status_outbox
        assert client.xlen(outbox) == 2
        r = ctl(
            queue_name,
            "enqueue",
            "--job-id",
            "bounded",
            "--tenant",
            "t",
            "--text",
            "x",
            env={"INGEST_STATUS_OUTBOX_MAX": "1"},
        )
        assert r.returncode == 0, r.stderr
        assert client.xlen(outbox) == 2
        assert q.get("bounded") is not None
    finally:
        client.close()


def test_a_redis_refusing_writes_is_exit_3_in_one_line(
    queue_name: str, private_redis: PrivateRedis
) -> None:
    import redis

    with redis.Redis.from_url(private_redis.url) as client:
        client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    r = ctl(queue_name, "enqueue", "-", redis_url=private_redis.url, stdin=json.dumps(job("ro")))
    assert r.returncode == 3, r.stderr
    assert "refuses writes" in r.stderr and "Traceback" not in r.stderr, r.stderr
