"""The child's texts as they may leave the runner: scrubbed of the job's secrets before
they are cut to their limits, so a cut never leaves a part of a secret behind."""

from __future__ import annotations

from collections.abc import Sequence

from supervisor.queue.redaction import piece_room, scrub_piece
from supervisor.runner.outcome import ERROR_LIMIT
from supervisor.runner.output import BoundedOutput
from supervisor.runner.protocol import MESSAGE_LIMIT


def shown_message(message: str | None, secrets: Sequence[str], *, cut: bool) -> str | None:
    """A progress message (`cut`: the child's went on past it) scrubbed of `secrets`, then
    cut to MESSAGE_LIMIT. Without secrets it is already at most that long."""
    if message is None or not secrets:
        return message
    return scrub_piece(message, secrets, cut_end=cut)[:MESSAGE_LIMIT] or None


def error_tail(stderr: BoundedOutput, secrets: Sequence[str]) -> str:
    """The end of stderr an error is made from, scrubbed of `secrets`: room for the error's
    ERROR_LIMIT characters once a cut through a secret is trimmed."""
    room = piece_room(secrets, ERROR_LIMIT)
    window = stderr.last(4 * room)
    text = window.decode("utf-8", errors="replace").rstrip()
    cut = stderr.total_bytes > len(window) or len(text) > room
    return scrub_piece(text[-room:], secrets, cut_start=cut)
