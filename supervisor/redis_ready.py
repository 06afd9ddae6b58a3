"""Waiting for Redis at the daemon's start: states a server leaves are waited out, a
refusal no wait can change stops the start (RedisRefused: one line, exit 2)."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    AuthorizationError,
    NoPermissionError,
    RedisClusterException,
    ResponseError,
)

from supervisor.aio import first_of
from supervisor.queue.jobqueue import JobQueue
from supervisor.redis_retry import TRANSIENT, why

log = logging.getLogger(__name__)


class RedisRefused(Exception):
    """Redis answers, but refuses this daemon for good (a wrong password, a database it
    does not have, an ACL without the commands): no retry can help."""


def refuses_for_good(exc: Exception) -> bool:
    """A reply no wait can change: a wrong password or user, an ACL without the command,
    a database number the server does not have, a command renamed away."""
    permanent = (
        AuthenticationError
        | AuthenticationWrongNumberOfArgsError
        | AuthorizationError
        | NoPermissionError
    )
    text = str(exc)
    return isinstance(exc, permanent) or "DB index" in text or "unknown command" in text


async def wait_for_redis(queue: JobQueue, stopping: asyncio.Event) -> None:
    """Return once Redis answers and runs the queue's scripts, or `stopping` is set;
    RedisRefused when it refuses this daemon for good."""
    pause = 0.2
    while True:
        try:
            await asyncio.wait_for(queue.client.ping(), timeout=5)
            await _may_run_scripts(queue)
            return
        except (AuthenticationError, AuthorizationError, ResponseError) as exc:
            if refuses_for_good(exc):
                raise RedisRefused(f"Redis refuses this daemon: {why(exc)}") from None
            # BUSY, MASTERDOWN, CLUSTERDOWN, LOADING: a state the server leaves.
            log.warning("Redis not ready (%s); retrying in %.1fs", why(exc), pause)
        except TRANSIENT as exc:
            log.warning("Redis not answering (%s); retrying in %.1fs", why(exc), pause)
        except RedisClusterException as exc:  # the cluster client wraps what went wrong
            cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            if refuses_for_good(cause):
                raise RedisRefused(f"Redis refuses this daemon: {why(cause)}") from None
            log.warning("Redis not answering (%s); retrying in %.1fs", why(cause), pause)
        await first_of(asyncio.sleep(pause), stopping.wait())
        if stopping.is_set():
            return
        pause = min(pause * 2, 5.0)


async def _may_run_scripts(queue: JobQueue) -> None:
    """Every verb is a script: an ACL that lets PING through but not them would leave a
    daemon that reports ready and fails every claim. Only that refusal counts here; any
    other trouble of the read shows again where the daemon meets it."""
    try:
        await asyncio.wait_for(queue.counts(), timeout=5)
    except NoPermissionError:
        raise
    except Exception as exc:
        log.debug("script check at start: %s", why(exc))
