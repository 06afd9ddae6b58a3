"""Configuration: environment, flags over environment, and clear errors that stop the start."""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from supervisor.settings import SettingsError, load_settings
from tests.daemon.conftest import wait_until
from tests.redis_server import PrivateRedis


def test_defaults_match_the_system_this_replaces() -> None:
    s = load_settings([], env={})
    assert (s.concurrency, s.max_attempts, s.backoff_s) == (2, 3, 5.0)
    assert (s.job_timeout_s, s.lease_s, s.kill_grace_s, s.shutdown_grace_s) == (300, 300, 10, 30)
    assert (s.keep_completed_s, s.keep_failed_s, s.max_output_bytes) == (3600, 86400, 1048576)
    assert s.queue == "ingest"


def test_flags_override_environment_and_rag_redis_url_is_a_fallback() -> None:
    env = {"INGEST_CONCURRENCY": "4", "RAG_REDIS_URL": "redis://old:6379/1"}
    s = load_settings(["--concurrency", "7"], env=env)
    assert s.concurrency == 7
    assert s.redis_url == "redis://old:6379/1"
    s = load_settings([], env={**env, "REDIS_URL": "redis://new:6379/0"})
    assert s.redis_url == "redis://new:6379/0"


def test_instance_from_supervisord_process_name_and_metrics_port() -> None:
    s = load_settings([], env={"SUPERVISOR_PROCESS_NAME": "ingest-supervisor_03"})
    assert s.instance == 3
    assert s.effective_metrics_port == 9464 + 3
    assert load_settings([], env={"INGEST_INSTANCE": "5"}).instance == 5


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"INGEST_CONCURRENCY": "zero"}, "INGEST_CONCURRENCY"),
        ({"INGEST_CONCURRENCY": "0"}, "INGEST_CONCURRENCY"),
        ({"INGEST_JOB_TIMEOUT": "-1"}, "INGEST_JOB_TIMEOUT"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"INGEST_QUEUE": "bad queue"}, "INGEST_QUEUE"),
        ({"INGEST_LOG_FORMAT": "xml"}, "INGEST_LOG_FORMAT"),
        ({"INGEST_STATUS_BACKEND": "postgres"}, "INGEST_STATUS_DSN"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings([], env=env)


def test_daemon_refuses_to_start_on_invalid_configuration() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor"],
        env={"INGEST_CONCURRENCY": "-3", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "INGEST_CONCURRENCY" in proc.stderr


def test_check_config_validates_and_exits_without_secrets() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor", "--check-config"],
        env={
            "SUPABASE_SERVICE_ROLE_KEY": "sekrit-key-123",
            "SUPABASE_URL": "http://x",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"concurrency": 2' in proc.stdout
    assert "sekrit-key-123" not in proc.stdout + proc.stderr


def test_worker_id_is_host_pid_without_an_instance() -> None:
    settings = load_settings([], {})
    host = socket.gethostname()
    assert dataclasses.replace(settings, instance=None).worker_id(11476) == f"{host}:11476"
    assert dataclasses.replace(settings, instance=3).worker_id(11476) == f"{host}:i3:11476"


PASSWORDS = ("pw-userinfo-1", "pw-query-2", "pw-keyword-3", "pw quoted 4", "pw-sentinel-5")
LEAKY_ENV = {
    "REDIS_URL": "redis://:pw-userinfo-1@127.0.0.1:1/0?password=pw-query-2",
    "INGEST_STATUS_BACKEND": "postgres",
    "INGEST_STATUS_DSN": "host=127.0.0.1 port=1 password=pw-keyword-3 user=u dbname=d",
    "INGEST_REDIS_SENTINELS": "",
    "PATH": "/usr/bin:/bin",
}


def test_check_config_masks_every_form_of_password() -> None:
    env = {**LEAKY_ENV, "INGEST_STATUS_DSN": "password='pw quoted 4' host=h dbname=d"}
    for dsn_env in (LEAKY_ENV, env):
        proc = subprocess.run(
            [sys.executable, "-m", "supervisor", "--check-config"],
            env=dsn_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        assert not [p for p in PASSWORDS if p in proc.stdout + proc.stderr], proc.stdout
        assert "host=127.0.0.1" in proc.stdout or "host=h" in proc.stdout


def test_start_up_line_masks_passwords(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.waiting import wait_until

    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor"],
            env={**LEAKY_ENV, "INGEST_METRICS_PORT": "0"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "starting with" in log.read_text(), 20, "the start-up line")
    finally:
        proc.kill()
        proc.wait(10)
    text = log.read_text()
    assert not [p for p in PASSWORDS if p in text], text


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw@h/0?password=pw2&db=1", "redis://user:***@h/0?password=***&db=1"),
        (
            "postgresql://u@h/d?sslmode=require&password=x",
            "postgresql://u@h/d?sslmode=require&password=***",
        ),
        ("host=h password=secret user=u", "host=h password=*** user=u"),
        ("host=h password = 'a b\\' c' user=u", "host=h password = *** user=u"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        # An @ in the password, and in the user name: the userinfo runs to the last @.
        ("redis://default:pa@ss@h:6379/0", "redis://default:***@h:6379/0"),
        ("redis://ops@corp.example:S3cret@h:6379/0", "redis://ops@corp.example:***@h:6379/0"),
        ("rediss://tok3n@h:6379/0", "rediss://tok3n@h:6379/0"),  # a user name alone
        ("rediss://h/0?ssl_password=k3y", "rediss://h/0?ssl_password=***"),
        ("REDIS_PASSWORD=s3cret next", "REDIS_PASSWORD=*** next"),
        ("nopassword=1", "nopassword=1"),
        # libpq's password for an encrypted client key, as a URL parameter and a keyword.
        ("postgresql://u@h/d?sslpassword=S3cret", "postgresql://u@h/d?sslpassword=***"),
        ("host=h sslpassword=S3cret", "host=h sslpassword=***"),
    ],
)
def test_mask_secrets_in_connection_strings(raw: str, masked: str) -> None:
    from supervisor.settings import mask_secrets

    assert mask_secrets(raw) == masked


def test_a_malformed_secret_setting_is_named_without_its_value() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "supervisor", "--check-config"],
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis//:Sup3rSecretPw@db:6379/0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "REDIS_URL" in proc.stderr and "Sup3rSecretPw" not in proc.stderr + proc.stdout


def test_a_worker_command_that_does_not_exist_stops_the_daemon_at_start() -> None:
    for args in (["--check-config"], []):
        proc = subprocess.run(
            [sys.executable, "-m", "supervisor", *args],
            env={"PATH": "/usr/bin:/bin", "INGEST_WORKER_COMMAND": "/nonexistent/bin/worker"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2, proc.stderr
        assert "INGEST_WORKER_COMMAND" in proc.stderr and "/nonexistent/bin/worker" in proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # A typo in the script's path would fail every job of the queue in turn.
        ({"INGEST_WORKER_PATH": "/nonexistent/worker_typo.py"}, "INGEST_WORKER_PATH"),
        ({"INGEST_WORKER_COMMAND": '"'}, "INGEST_WORKER_COMMAND"),  # no closing quotation
        # No duration is forever: each is turned into a deadline, a timer or a lease.
        ({"INGEST_SHUTDOWN_GRACE_SECONDS": "inf"}, "INGEST_SHUTDOWN_GRACE_SECONDS"),
        ({"INGEST_KILL_GRACE_SECONDS": "inf"}, "INGEST_KILL_GRACE_SECONDS"),
        ({"INGEST_LEASE_SECONDS": "inf"}, "INGEST_LEASE_SECONDS"),
        ({"INGEST_JOB_TIMEOUT": "inf"}, "INGEST_JOB_TIMEOUT"),
        ({"INGEST_BACKOFF_SECONDS": "nan"}, "INGEST_BACKOFF_SECONDS"),
        # The child must be dead before its lease can pass to another daemon.
        (
            {"INGEST_LEASE_SECONDS": "15", "INGEST_KILL_GRACE_SECONDS": "10"},
            "INGEST_KILL_GRACE_SECONDS",
        ),
    ],
)
def test_a_setting_no_job_could_run_with_stops_the_daemon_at_start(
    env: dict[str, str], named: str
) -> None:
    proc = _daemon(env, "--check-config")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert named in proc.stderr and "Traceback" not in proc.stderr


def _daemon(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        env={"PATH": "/usr/bin:/bin", "INGEST_STATUS_BACKEND": "none", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_redis_that_refuses_the_daemon_for_good_stops_it_clearly() -> None:
    """A database the server does not have (or a wrong password, an ACL without the
    commands): no retry can help, so the daemon says so and exits 2, claiming nothing."""
    proc = _daemon({"REDIS_URL": "redis://127.0.0.1:6379/99"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Redis refuses this daemon" in proc.stderr and "DB index" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_metrics_port_already_taken_stops_the_daemon_clearly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _daemon({"INGEST_METRICS_PORT": str(port), "INGEST_METRICS_HOST": "127.0.0.1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr


def test_a_cluster_url_naming_a_database_is_refused() -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:7000/3", "INGEST_REDIS_CLUSTER": "1"}
    proc = _daemon(env, "--check-config")
    assert proc.returncode == 2, proc.stderr
    assert "REDIS_URL" in proc.stderr and "database 0" in proc.stderr


def test_a_cluster_out_of_reach_at_start_is_waited_for(tmp_path: Path) -> None:
    """The cluster client wraps every failure of its start: one that waiting can cure (no
    node answering yet) is waited out, as with a single server, until the stop."""
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor"],
            env={
                "PATH": "/usr/bin:/bin",
                "REDIS_URL": "redis://127.0.0.1:1/0",
                "INGEST_REDIS_CLUSTER": "1",
                "INGEST_STATUS_BACKEND": "none",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "not answering" in log.read_text(), 20, "a retry logged")
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in log.read_text()


def test_an_acl_that_lets_ping_through_but_no_script_stops_the_daemon_clearly(
    private_redis: PrivateRedis,
) -> None:
    """Every verb of the queue is a script: a user who may PING but not run them would
    leave a daemon that says ready and fails every claim."""
    admin = redis.Redis.from_url(private_redis.url)
    admin.acl_setuser(
        "noscripts",
        enabled=True,
        passwords=["+pw-noscripts"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-@scripting"],
    )
    admin.close()
    url = private_redis.url.replace("redis://", "redis://noscripts:pw-noscripts@")
    proc = _daemon({"REDIS_URL": url})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Redis refuses this daemon" in proc.stderr and "Traceback" not in proc.stderr
    assert "pw-noscripts" not in proc.stderr


def test_replies_no_wait_can_change_are_told_from_states_a_server_leaves() -> None:
    from redis.exceptions import BusyLoadingError, ResponseError

    from supervisor.redis_ready import refuses_for_good

    assert refuses_for_good(ResponseError("unknown command 'PING', with args beginning with:"))
    assert refuses_for_good(ResponseError("DB index is out of range"))
    assert not refuses_for_good(ResponseError("BUSY Redis is busy running a script"))
    assert not refuses_for_good(ResponseError("MASTERDOWN Link with MASTER is down"))
    assert not refuses_for_good(BusyLoadingError("Redis is loading the dataset in memory"))
