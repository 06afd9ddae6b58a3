"""A curious child reads nothing of its daemon's secrets.

The daemon's secrets live in its environment (REDIS_URL, LANGFUSE_SECRET_KEY, ...) or in a
credentials directory (systemd `LoadCredential=`). A real daemon runs a child that tries
to read `/proc/<daemon pid>/environ`, its memory map and the credentials directory.

Two kernel rules do the work. A process that set PR_SET_DUMPABLE=0 has its /proc files
handed to root:root (mode 0400 for environ), so a child of the daemon's own non-root user
cannot open them; and a child running as another user (INGEST_CHILD_USER) can read neither
those files nor the daemon-only credentials directory. Tests run as root, for whom the
first rule does not bite, so the daemon runs with its group set to nogroup (`setpriv`):
its /proc files then show which rule the kernel applies, root's group when non-dumpable,
nogroup otherwise. `setpriv` execs the daemon, so the pid the test holds is the daemon's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor.queue.states import JobState
from supervisor.secretfiles import SecretFileError, with_secret_files
from tests.daemon.conftest import DaemonProcess, SyncQueue, job, wait_until
from tests.redis_server import PrivateRedis

SNOOP = Path(__file__).resolve().parent / "children" / "snoop.py"
SECRET = "lf-secret-0123456789-sentinel"
SETPRIV = shutil.which("setpriv")
# The child runs a stdlib-only script: an interpreter every user can execute.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
NOGROUP = 65534
ROOT_WARNING = "running as root without INGEST_CHILD_USER"
AS_NOGROUP = (str(SETPRIV), f"--regid={NOGROUP}", "--clear-groups", "--")

needs_root = pytest.mark.skipif(
    SETPRIV is None or SYSTEM_PYTHON is None or os.geteuid() != 0,
    reason="needs root, setpriv (util-linux) and /usr/bin/python3",
)


def snoop(q: SyncQueue, job_id: str, daemon: DaemonProcess, cred_dir: str = "") -> Any:
    q.enqueue(job(job_id, daemon_pid=daemon.pid, cred_dir=cred_dir))
    wait_until(
        lambda: (rec := q.get(job_id)) is not None and rec.state is JobState.COMPLETED,
        30,
        f"{job_id} completed",
    )
    return q.get(job_id).result


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_a_root_daemon_with_children_of_its_own_user_says_so(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = start_daemon()
    daemon.wait_ready()
    assert ROOT_WARNING in daemon.log()


@needs_root
def test_the_daemon_is_not_dumpable_and_a_child_user_reads_none_of_its_secrets(
    start_daemon: Callable[..., DaemonProcess],
    q: SyncQueue,
    private_redis: PrivateRedis,
    request: pytest.FixtureRequest,
) -> None:
    """REDIS_URL comes from $CREDENTIALS_DIRECTORY (the environment's REDIS_URL is empty)
    and LANGFUSE_SECRET_KEY from the environment; the child runs as nobody."""
    # Under /tmp, not the test's private directory, so that only the directories' own
    # modes stand between the child user and them.
    shared = Path(tempfile.mkdtemp(prefix="i14-secrets-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o711)
    jobs = shared / "jobs"
    jobs.mkdir(mode=0o711)
    creds = shared / "credentials"
    creds.mkdir()
    (creds / "ingest.REDIS_URL").write_text(private_redis.url + "\n")
    (creds / "ingest.REDIS_URL").chmod(0o400)
    creds.chmod(0o500)
    queue = SyncQueue(q.queue, private_redis.url)
    daemon = start_daemon(
        prefix=AS_NOGROUP,
        REDIS_URL="",
        CREDENTIALS_DIRECTORY=str(creds),
        LANGFUSE_SECRET_KEY=SECRET,
        INGEST_WORKER_COMMAND=f"{SYSTEM_PYTHON} {SNOOP}",
        INGEST_CHILD_USER="nobody",
        TMPDIR=str(jobs),
    )
    daemon.wait_ready()
    assert ROOT_WARNING not in daemon.log()

    environ = os.stat(f"/proc/{daemon.pid}/environ")
    assert (environ.st_uid, environ.st_gid) == (0, 0), "the daemon is still dumpable"
    assert environ.st_mode & 0o077 == 0

    seen = snoop(queue, "snoop-child-user", daemon, cred_dir=str(creds))
    assert seen["uid"] == 65534
    assert seen["caps"] == {k: "0000000000000000" for k in ("CapPrm", "CapEff", "CapAmb")}
    for key in ("environ", "mem_maps", "cred_list", "cred_redis"):
        assert seen[key] == "error:PermissionError", (key, seen[key][:80])
    assert SECRET not in repr(seen) and private_redis.url not in repr(seen)
    assert not {"CREDENTIALS_DIRECTORY", "LANGFUSE_SECRET_KEY", "REDIS_URL"} & set(
        seen["env_names"]
    )


def test_secret_files_and_their_errors(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    env = with_secret_files({"INGEST_API_TOKEN_FILE": str(token), "OTHER": "x"})
    assert env["INGEST_API_TOKEN"] == "s3cret-token" and env["OTHER"] == "x"

    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "SUPABASE_SERVICE_ROLE_KEY").write_text("srk")
    (creds / "ingest.LANGFUSE_SECRET_KEY").write_text("lfk")
    env = with_secret_files({"CREDENTIALS_DIRECTORY": str(creds), "INGEST_STATUS_DSN": "d"})
    assert env["SUPABASE_SERVICE_ROLE_KEY"] == "srk" and env["LANGFUSE_SECRET_KEY"] == "lfk"
    assert env["INGEST_STATUS_DSN"] == "d"

    with pytest.raises(SecretFileError, match="REDIS_URL and REDIS_URL_FILE"):
        with_secret_files({"REDIS_URL": "redis://x", "REDIS_URL_FILE": str(token)})
    with pytest.raises(SecretFileError, match=r"LANGFUSE_SECRET_KEY_FILE=.*cannot be read"):
        with_secret_files({"LANGFUSE_SECRET_KEY_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretFileError, match="is empty"):
        with_secret_files({"INGEST_STATUS_DSN_FILE": str(tmp_path / "empty")})
