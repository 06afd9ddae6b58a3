"""Job working directories: a brand-new private one per job, removed at the job's end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import tempfile

from supervisor.runner.config import RunnerConfig
from supervisor.runner.forkserver import FORK_SERVER
from supervisor.runner.spawn import SpawnSpec

log = logging.getLogger(__name__)

# Run as the child's user: its files in its directory are its to remove, not the daemon's.
_REMOVE_AS_USER = 'chmod -R u+rwx -- "$1" 2>/dev/null; exec rm -rf -- "$1" 2>/dev/null'
REMOVE_AS_USER_TIMEOUT_S = 60.0


def new_workdir(root: str | None, user: str | None) -> str:
    """A brand-new empty 0700 directory for one job: its cwd, HOME and TMPDIR."""
    path = tempfile.mkdtemp(prefix="ingest-job-", dir=root)
    if user is not None:
        try:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        except (OSError, KeyError):
            os.rmdir(path)
            raise
    return path


async def remove_job_dir(config: RunnerConfig, path: str) -> None:
    """Remove a job's directory with whatever its child left in it, off the event loop
    (a child can leave any number of files). Never raises: a directory that cannot go
    is logged."""
    try:
        if await asyncio.to_thread(remove_workdir, path):
            return
        if config.user is not None or config.group is not None:
            await _remove_as_child_user(config, path)
            if await asyncio.to_thread(remove_workdir, path):
                return
        log.warning("job directory %s could not be removed", path)
    except Exception:
        log.exception("job directory %s could not be removed", path)


def remove_workdir(path: str) -> bool:
    """Remove a directory tree as this process; True once it is gone (blocking).

    A child may have taken its owner's rights away from directories it made (mode 000);
    a daemon without file privileges, as shipped, cannot list or empty those until it
    gives the rights back, so that is done before a second attempt."""
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return True
    _restore_owner_rights(path)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.rmdir(path)  # emptied by its owner: only our right on the parent counts
    return not os.path.lexists(path)


async def _remove_as_child_user(config: RunnerConfig, path: str) -> None:
    """What a child running as another user (INGEST_CHILD_USER) made in its directory
    belongs to that user, and a daemon without file privileges may not remove it: a
    process of that user, started like any child, does."""
    argv = ("/bin/sh", "-c", _REMOVE_AS_USER, "sh", path)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
    spec = SpawnSpec(argv, env, "/", config.limits, config.user, config.group)
    child = await (config.fork_server or FORK_SERVER).spawn(spec)
    for fd in (child.stdin_fd, child.stdout_fd, child.stderr_fd):
        os.close(fd)
    if child.start_report is not None:
        child.start_report.close()
    try:
        await asyncio.wait_for(asyncio.shield(child.exited), REMOVE_AS_USER_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)


def _restore_owner_rights(top: str) -> None:
    """rwx for the owner on `top` and every directory under it, where we own it. Each is
    opened as O_PATH without following symlinks (a child's symlink to a directory of
    ours must not have its target changed) and changed through its /proc/self/fd link."""
    _chmod_dir(top, None)
    # Unreadable directories (another user's) are passed over: fwalk reports them to
    # onerror, and the top one raises.
    with contextlib.suppress(OSError):
        for _path, dirnames, _files, dir_fd in os.fwalk(top, onerror=lambda _exc: None):
            for name in dirnames:  # changed before fwalk descends into it
                _chmod_dir(name, dir_fd)


def _chmod_dir(name: str, dir_fd: int | None) -> None:
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY, dir_fd=dir_fd)
    except OSError:  # a symlink, gone, or not ours to reach
        return
    try:
        with contextlib.suppress(OSError):
            os.chmod(f"/proc/self/fd/{fd}", 0o700)
    finally:
        os.close(fd)
