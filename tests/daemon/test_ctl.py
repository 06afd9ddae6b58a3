"""ingestctl as scripts use it: real process, real Redis, meaningful exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.states import JobState
from tests.conftest import REDIS_URL
from tests.daemon.conftest import SyncQueue, job, wait_until


def ctl(
    queue: str,
    *args: str,
    redis_url: str = REDIS_URL,
    stdin: str | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.ctl", "--redis-url", redis_url, "--queue", queue, *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
    )


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
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"job_id": "c1", "created": True, "state": "waiting"}
    again = ctl(queue_name, "enqueue", "--job-id", "c1", "--tenant", "acme", "--text", "hi")
    assert json.loads(again.stdout)["created"] is False
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
    assert json.loads(ctl(queue_name, "counts").stdout)["waiting"] == 1
    r = ctl(queue_name, "cancel", "s1")
    assert (r.returncode, r.stdout.strip()) == (0, "cancelled")
    assert ctl(queue_name, "cancel", "s1").returncode == 0  # idempotent
    q.enqueue(job("done"))
    claim = q.claim("w", lease_s=5, timeout_s=5)
    assert q.complete(claim.job.job_id, claim.token, None)
    r = ctl(queue_name, "cancel", "done")
    assert (r.returncode, r.stdout.strip()) == (1, "completed")  # cannot cancel a finished job
    assert ctl(queue_name, "retry", "s1").stdout.strip() == "waiting"
    assert q.get("s1").state is JobState.WAITING
    assert ctl(queue_name, "retry", "ghost").returncode == 4
    q.cancel("s1")
    assert ctl(queue_name, "purge", "--state", "cancelled").stdout.strip() == "1"
    assert q.get("s1") is None


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


def test_workers_lists_live_daemons(start_daemon, queue_name: str) -> None:
    d = start_daemon()
    d.wait_ready()
    out = wait_until(lambda: ctl(queue_name, "workers").stdout.strip(), 10, "a heartbeat")
    info = json.loads(out.splitlines()[0])
    assert info["pid"] == d.pid and info["slots"] == 2


@pytest.mark.parametrize("args", [("counts",), ("status", "x")])
def test_redis_unreachable_exit_3(queue_name: str, args: tuple[str, ...]) -> None:
    r = ctl(queue_name, *args, redis_url="redis://127.0.0.1:1/0")
    assert r.returncode == 3
    assert "Redis unreachable" in r.stderr


def test_another_tenants_job_id_is_a_clear_error(queue_name: str, q: SyncQueue) -> None:
    from supervisor.client import enqueue_ingestion_job
    from supervisor.payload import TenantConflict

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
    from supervisor.client import enqueue_ingestion_job

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
