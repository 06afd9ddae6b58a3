"""Job working directories: a brand-new private one per job, removed at the job's end."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import pwd
import secrets
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

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


JOBS_ROOT_PREFIX = "ingest-jobs-"
JOB_DIR_PREFIX = "ingest-job-"


@dataclass(frozen=True)
class JobsRoot:
    """A directory of one daemon's own for its jobs' directories, mode 0711: a child
    reaches its own directory (it is given the path) but can neither list nor remove
    another job's, not even one made a moment ago for a job not yet started. (A child
    under the daemon's own user owns this directory too: INGEST_CHILD_USER is what keeps
    jobs apart.)

    The daemon holds a BSD lock (flock) on the directory for as long as it lives: the
    kernel lets go of it however the daemon ends, so a root whose lock is free is a dead
    daemon's (see `stale_jobs_roots`), and systemd-tmpfiles does not age a locked
    directory away."""

    path: str
    lock_fd: int

    @classmethod
    def create(cls, base: str | None = None) -> JobsRoot:
        # Made and locked under a name the stale sweep does not look at, then renamed:
        # another daemon never sees it unlocked.
        making = tempfile.mkdtemp(prefix=f".{JOBS_ROOT_PREFIX}", dir=base)
        try:
            fd = _open_and_lock(making)
            path = os.path.join(os.path.dirname(making), os.path.basename(making)[1:])
            os.rename(making, path)
        except OSError:
            shutil.rmtree(making, ignore_errors=True)
            raise
        _hold(path, fd)
        return cls(path, fd)

    def remove(self) -> None:
        """At the daemon's end; a directory a job left behind keeps it, and is logged (the
        next daemon to start removes it)."""
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("directory of job directories %s left in place: %s", self.path, exc)
        finally:
            _HELD_ROOTS.pop(self.path, None)
            os.close(self.lock_fd)


def stale_jobs_roots(base: str | None = None) -> list[str]:
    """Jobs roots in `base` (the temporary directory) of this user's daemons that are
    gone: nobody holds their lock."""
    stale: list[str] = []
    try:
        entries = list(os.scandir(base or tempfile.gettempdir()))
    except OSError:
        return stale
    for entry in entries:
        if not entry.name.startswith(JOBS_ROOT_PREFIX):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: a live daemon's
            continue
        finally:
            os.close(fd)
        stale.append(entry.path)
    return stale


async def remove_stale_jobs_roots(
    config: RunnerConfig,
    base: str | None = None,
    *,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Remove what dead daemons left in the temporary directory: each job's directory as
    any job's is removed (as its user when needed), then the root. How many roots went.
    Given up as soon as `stopping()` says so (a stop signal): the next daemon goes on."""
    removed = 0
    for root in stale_jobs_roots(base):
        with contextlib.suppress(OSError):
            for entry in os.scandir(root):
                if stopping():
                    return removed
                await remove_job_dir(config, entry.path)
        try:
            os.rmdir(root)
        except OSError as exc:
            log.warning("a dead daemon's job directories %s left in place: %s", root, exc)
            continue
        removed += 1
    if removed:
        log.warning("removed the job directories of %d daemon(s) that ended uncleanly", removed)
    return removed


@dataclass(frozen=True)
class _HeldRoot:
    fd: int  # holds the lock
    device: int
    inode: int


# The jobs roots this process made, by path: what is there must still be that directory.
_HELD_ROOTS: dict[str, _HeldRoot] = {}
# Locks of roots made again, or moved away by a child: held, as the first one's is, while
# jobs may still run in them (the next daemon removes the moved ones as stale). At most
# MAX_REMADE_ROOT_LOCKS, the oldest let go first: a child that keeps moving the root
# away must not use up the daemon's descriptors.
_REMADE_ROOT_LOCKS: list[int] = []
MAX_REMADE_ROOT_LOCKS = 64


def _open_and_lock(root: str) -> int:
    """Give a new jobs root its mode (0711, whatever the umask) and take its lock (see
    JobsRoot); the descriptor that holds it. Never through a link put in its place."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, 0o711)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        raise
    return fd


def _hold(root: str, fd: int) -> None:
    info = os.fstat(fd)
    _HELD_ROOTS[root] = _HeldRoot(fd, info.st_dev, info.st_ino)


def _make_root_again(root: str) -> None:
    """`root` again, 0711 and locked before any job directory goes in it."""
    os.mkdir(root, 0o711)
    fd = _open_and_lock(root)
    _REMADE_ROOT_LOCKS.append(fd)
    if len(_REMADE_ROOT_LOCKS) > MAX_REMADE_ROOT_LOCKS:
        os.close(_REMADE_ROOT_LOCKS.pop(0))
    _hold(root, fd)


def _check_root(root: str) -> _HeldRoot | None:
    """`root` as this process made it, or made again: a /tmp cleaner removes what looks
    unused, and a child under the daemon's own user owns the root as the daemon does (it
    can take its rights, move it away and leave a file or a link in its place, which
    would stop every later job's start or put its directory where the child chose). One
    lstat when nothing changed. The root held now, or None for a directory this process
    did not make."""
    held = _HELD_ROOTS.get(root)
    try:
        info = os.lstat(root)
    except FileNotFoundError:
        _make_root_again(root)
        return _HELD_ROOTS[root]
    if held is None:  # not a root of ours (a caller's own directory): used as it is
        return None
    if (info.st_dev, info.st_ino) == (held.device, held.inode):
        if stat.S_IMODE(info.st_mode) != 0o711:
            os.fchmod(held.fd, 0o711)
        return held
    # Something else in its place: the root itself lives on wherever it was moved, still
    # locked by us, with the directories of the jobs that run in it.
    log.warning("the directory of job directories %s was replaced (by a job?): made again", root)
    if stat.S_ISDIR(info.st_mode):
        # A directory of the same user: moved aside under a stale root's name, which the
        # next daemon to start removes (its lock is nobody's).
        os.rename(root, f"{root}.replaced-{os.urandom(4).hex()}")
    else:
        os.unlink(root)
    _make_root_again(root)
    return _HELD_ROOTS[root]


def new_workdir(root: str | None, user: str | None) -> str:
    """A brand-new empty 0700 directory for one job (its cwd, HOME and TMPDIR), in `root`
    (checked, and made again if it is not the directory this process made, see
    `_check_root`)."""
    held = None if root is None else _check_root(root)
    if root is None or held is None:  # a directory of the caller's: used as it is
        path = tempfile.mkdtemp(prefix=JOB_DIR_PREFIX, dir=root)
        name, dir_fd = path, None
    else:
        # Made through the held descriptor: inside our root wherever a child moved it, never
        # through a link put at its path meanwhile.
        name, dir_fd = _mkdir_in(held.fd), held.fd
        path = os.path.join(root, name)
    if user is not None:
        try:
            entry = pwd.getpwnam(user)
            os.chown(name, entry.pw_uid, entry.pw_gid, dir_fd=dir_fd, follow_symlinks=False)
        except (OSError, KeyError):
            os.rmdir(name, dir_fd=dir_fd)
            raise
    return path


def _mkdir_in(dir_fd: int) -> str:
    """A new 0700 directory under a random name in the directory `dir_fd`; its name."""
    for _ in range(100):
        name = JOB_DIR_PREFIX + secrets.token_hex(6)
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            continue
        return name
    raise FileExistsError(errno.EEXIST, "no unused name for a job directory")


# Directories left full removed in the background at once, at most; beyond that a job's
# end waits for its own removal (in a thread of the loop's pool, as one slot's own).
MAX_BACKGROUND_REMOVALS = 2
# A directory holding at most this many plain files is emptied on the spot, on the event
# loop (a few unlinks): a child that leaves a file or two waits behind nobody's removal.
FEW_ENTRIES = 4
_REMOVING: set[asyncio.Task[None]] = set()


async def remove_left_dir(config: RunnerConfig, path: str) -> None:
    """Remove a directory its child left files in. A few plain files go at once; more
    go in the background while fewer than MAX_BACKGROUND_REMOVALS are under way, so that
    neither the job's outcome nor its slot's next job waits for them; beyond that, before
    returning, so that a tenant whose children keep leaving full directories holds its
    own slots up, not an unbounded number of the daemon's threads and processes."""
    if _remove_few(path):
        return
    loop = asyncio.get_running_loop()
    under_way = sum(1 for t in _REMOVING if t.get_loop() is loop and not t.done())
    if under_way >= MAX_BACKGROUND_REMOVALS:
        await asyncio.shield(remove_job_dir(config, path))
        return
    task = loop.create_task(remove_job_dir(config, path, in_background=True), name=f"remove {path}")
    _REMOVING.add(task)
    task.add_done_callback(_REMOVING.discard)


def _remove_few(path: str) -> bool:
    """Empty and remove `path` here if it holds at most FEW_ENTRIES plain files (no
    directory, no symlink to follow); False, untouched, otherwise. A symlink a child left
    in place of its directory is not followed: its target is never emptied."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        names: list[str] = []
        with os.scandir(fd) as entries:
            for entry in entries:
                if len(names) == FEW_ENTRIES or not entry.is_file(follow_symlinks=False):
                    return False
                names.append(entry.name)
        for name in names:
            os.unlink(name, dir_fd=fd)
        os.rmdir(path)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


async def _in_daemon_thread(path: str) -> bool:
    """`_remove_tree(path)` in a thread of its own that the interpreter does not wait for
    at exit (a pool's threads it joins): a daemon that stops mid-removal exits, and the
    next daemon removes what is left (`stale_jobs_roots`)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def settle(gone: bool | None, exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(bool(gone))

    def work() -> None:
        try:
            gone, exc = _remove_tree(path), None
        except BaseException as error:  # handed to the awaiting task
            gone, exc = None, error
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, gone, exc)

    threading.Thread(target=work, name="ingest-job-dir-removal", daemon=True).start()
    return await done


async def removals_finished(timeout_s: float) -> bool:
    """Wait up to `timeout_s` for the background removals of this event loop (at the
    daemon's stop); True when none is left. A removal's thread, once started, runs to its
    end even past that; what is left unremoved the next daemon removes (see
    `stale_jobs_roots`)."""
    loop = asyncio.get_running_loop()
    pending = {t for t in _REMOVING if t.get_loop() is loop and not t.done()}
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)
    return all(t.done() for t in pending)


async def remove_job_dir(config: RunnerConfig, path: str, *, in_background: bool = False) -> None:
    """Remove a job's directory with whatever its child left in it, off the event loop
    (a child can leave any number of files): in the loop's thread pool, or in a thread of
    its own `in_background`. Never raises: a directory that cannot go is logged."""

    async def remove_tree() -> bool:
        if in_background:
            return await _in_daemon_thread(path)
        return await asyncio.to_thread(_remove_tree, path)

    try:
        if await remove_tree():
            return
        # Locked directories, a tree deeper than Python recurses, or another user's files
        # (INGEST_CHILD_USER): a process of the directory's user removes it.
        await _remove_as_its_user(config, path)
        if await remove_tree():
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
