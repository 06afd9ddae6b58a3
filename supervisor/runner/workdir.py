"""Job working directories: a brand-new private one per job, removed at the job's end."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import tempfile

log = logging.getLogger(__name__)


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


def remove_workdir(path: str) -> None:
    """Remove a job's directory with whatever its child left in it (blocking: call it in a
    thread). A child may have taken its owner's rights away from directories it made
    (mode 000); a daemon without file privileges, as shipped, cannot list or empty those
    until it gives the rights back, so that is done before a second attempt."""
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    _restore_owner_rights(path)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        log.warning("job directory %s could not be removed", path)


def _restore_owner_rights(top: str) -> None:
    """rwx for the owner on `top` and every directory under it, where we own it. Each is
    opened as O_PATH without following symlinks (a child's symlink to a directory of
    ours must not have its target changed) and changed through its /proc/self/fd link."""
    _chmod_dir(top, None)
    for _path, dirnames, _files, dir_fd in os.fwalk(top):
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
