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

# Run as the user whose files they are (the child's, or ours): gives the owner back the
# rights a child may have taken from its directories (mode 000), then removes the tree.
# Both tools walk iteratively, so no depth stops them. Neither follows a symlink inside
# the tree, but chmod follows one named as its operand: a child can leave one in place of
# its directory, and then only the link is removed.
_REMOVE_TREE = '[ -L "$1" ] || chmod -R u+rwx -- "$1" 2>/dev/null; exec rm -rf -- "$1" 2>/dev/null'
REMOVE_TREE_TIMEOUT_S = 60.0


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
    (a child can leave any number of files). Never raises: a directory that cannot go is
    logged."""
    try:
        if await asyncio.to_thread(_remove_tree, path):
            return
        # Locked directories, a tree deeper than Python recurses, or another user's files
        # (INGEST_CHILD_USER): a process of the directory's user removes it.
        await _remove_as_its_user(config, path)
        if await asyncio.to_thread(_remove_tree, path):
            return
        log.warning("job directory %s could not be removed", path)
    except Exception:
        log.exception("job directory %s could not be removed", path)


def _remove_tree(path: str) -> bool:
    """rmtree as this process; True once `path` is gone (blocking)."""
    with contextlib.suppress(RecursionError):  # a tree deeper than Python recurses
        shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        with contextlib.suppress(OSError):
            os.rmdir(path)  # emptied by its owner: only our right on the parent counts
    return not os.path.lexists(path)


async def _remove_as_its_user(config: RunnerConfig, path: str) -> None:
    """`chmod -R u+rwx; rm -rf` of `path`, started like any child as the child's user."""
    argv = ("/bin/sh", "-c", _REMOVE_TREE, "sh", path)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C"}
    spec = SpawnSpec(argv, env, "/", config.limits, config.user, config.group)
    child = await (config.fork_server or FORK_SERVER).spawn(spec)
    for fd in (child.stdin_fd, child.stdout_fd, child.stderr_fd):
        os.close(fd)
    if child.start_report is not None:
        child.start_report.close()
    try:
        await asyncio.wait_for(asyncio.shield(child.exited), REMOVE_TREE_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(OSError):
            os.killpg(child.pid, signal.SIGKILL)
