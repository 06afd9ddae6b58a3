"""The child protocol over raw stdout bytes: a pure scanner and parser, no I/O.

Only lines starting with `PROGRESS:` or `RESULT:` are ever buffered, and never beyond a cap;
everything else is skipped with `bytes.find`, so a flood of log lines costs a few C-level
searches per chunk rather than Python work per line.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from supervisor.queue.payload import replace_surrogates, strict_json
from supervisor.queue.walk import MAX_DEPTH, json_nested_too_deep

PROGRESS_PREFIX = b"PROGRESS:"
RESULT_PREFIX = b"RESULT:"
_PREFIXES = (PROGRESS_PREFIX, RESULT_PREFIX)
_LONGEST_PREFIX = max(len(p) for p in _PREFIXES)
_NUMBER = re.compile(rb"(?:100(?:\.0+)?|\d{1,2}(?:\.\d+)?)")
MESSAGE_LIMIT = 1000
# A RESULT line longer than this is parsed in a thread (see parse_last_result).
THREADED_RESULT_BYTES = 64 * 1024
# A UTF-16 surrogate escape in a RESULT line (\ud800-\udfff): unpaired, it decodes to a
# lone surrogate, which no UTF-8 encoder (Redis readers, the status store) accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class ProtocolLine:
    """One protocol line (without its newline); `truncated` when it was cut at the cap."""

    data: bytes
    truncated: bool = False


class ProtocolScanner:
    """Finds protocol lines in a stream of chunks; lines split across chunks are joined.

    A protocol line longer than its cap is cut: the first `cap` bytes are reported with
    truncated=True and the rest of the line is skipped without being stored.
    """

    def __init__(self, max_line_bytes: int = 64 * 1024, max_result_bytes: int = 1024 * 1024):
        self._progress_cap = max_line_bytes
        self._result_cap = max(max_result_bytes, len(RESULT_PREFIX))
        self._pending: bytearray | None = None  # a line that is or may become a protocol line
        self._at_line_start = True
        self._skipping = False  # inside a line known not to matter (or already cut)

    def feed(self, data: bytes) -> list[ProtocolLine]:
        out: list[ProtocolLine] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._pending is not None:
                pos = self._collect(data, pos, out)
            elif self._skipping:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    return out
                self._skipping = False
                self._at_line_start = True
                pos = nl + 1
            elif self._at_line_start:
                if data.startswith(_PREFIXES, pos):
                    # The common case, a whole protocol line inside this chunk: one slice.
                    nl = data.find(b"\n", pos)
                    is_result = data.startswith(RESULT_PREFIX, pos)
                    cap = self._result_cap if is_result else self._progress_cap
                    if 0 <= nl - pos <= cap:
                        out.append(ProtocolLine(data[pos:nl]))
                        pos = nl + 1
                        continue
                    self._pending = bytearray()
                    pos = self._collect(data, pos, out)
                elif _is_prefix_start(data, pos):
                    self._pending = bytearray()
                    pos = self._collect(data, pos, out)
                else:
                    self._at_line_start = False
            else:
                pos = self._jump(data, pos)
        return out

    def finish(self) -> list[ProtocolLine]:
        """End of stream: a protocol line without a final newline still counts."""
        pending, self._pending = self._pending, None
        self._at_line_start, self._skipping = True, False
        if pending and pending.startswith(_PREFIXES):
            return [ProtocolLine(bytes(pending))]
        return []

    def _jump(self, data: bytes, pos: int) -> int:
        """Mid-line: move to the next line that could be a protocol line, or to the end."""
        hits = [i for i in (data.find(b"\n" + p, pos) for p in _PREFIXES) if i >= 0]
        if hits:
            self._at_line_start = True
            return min(hits) + 1
        last_nl = data.rfind(b"\n", pos)
        if last_nl < 0:
            return len(data)
        # The last line of the chunk may be the start of a prefix cut by the chunk boundary.
        self._at_line_start = True
        return last_nl + 1

    def _collect(self, data: bytes, pos: int, out: list[ProtocolLine]) -> int:
        pending = self._pending
        assert pending is not None
        nl = data.find(b"\n", pos)
        stop = len(data) if nl < 0 else nl
        head = bytes(pending[:_LONGEST_PREFIX]) + data[pos : pos + _LONGEST_PREFIX]
        if not head.startswith(_PREFIXES):
            if nl < 0 and len(head) < _LONGEST_PREFIX and _is_prefix(head):
                pending += data[pos:stop]  # a prefix cut by the chunk boundary: wait for more
                return stop
            return self._abandon(nl, len(data))
        cap = self._result_cap if head.startswith(RESULT_PREFIX) else self._progress_cap
        take = min(stop, pos + max(cap - len(pending), 0))
        pending += data[pos:take]
        if take < stop:  # over the cap: report what we have, skip the rest of the line
            out.append(ProtocolLine(bytes(pending), truncated=True))
            self._pending = None
            self._skipping = True
            return take
        if nl < 0:
            return stop
        out.append(ProtocolLine(bytes(pending)))
        self._pending = None
        self._at_line_start = True
        return nl + 1

    def _abandon(self, nl: int, end: int) -> int:
        self._pending = None
        if nl < 0:
            self._skipping = True
            self._at_line_start = False
            return end
        self._at_line_start = True
        return nl + 1


def _is_prefix(fragment: bytes | bytearray) -> bool:
    return any(p.startswith(fragment) for p in _PREFIXES)


def _is_prefix_start(data: bytes, pos: int) -> bool:
    """True when the rest of `data` from pos is a proper start of a prefix (cut by the chunk)."""
    rest = data[pos : pos + _LONGEST_PREFIX]
    return b"\n" not in rest and len(rest) < _LONGEST_PREFIX and _is_prefix(rest)


class LineBudget:
    """Protocol lines one child may have parsed, refilled at `per_s` a second up to a
    second's worth: every line is Python work on the daemon's loop, which every slot
    shares. A pause lasts at most MAX_PAUSE_S, so a read still comes that often (what the
    child writes after a SIGTERM, its pipe's end once it has exited); one read is a chunk,
    so the rate holds within a chunk's worth of lines per pause."""

    MAX_PAUSE_S = 0.5

    def __init__(self, per_s: float, now: float) -> None:
        self._rate = per_s
        self._left = per_s
        self._at = now

    def spend(self, lines: int, now: float) -> float:
        """Take `lines`; seconds to wait before reading more (0.0: read on)."""
        self._left = min(self._rate, self._left + (now - self._at) * self._rate) - lines
        self._at = now
        return 0.0 if self._left >= 0 else min(-self._left / self._rate, self.MAX_PAUSE_S)


# ---- line parsing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    percent: float
    message: str | None
    cut: bool = False  # the child's message went on past `message`


@dataclass(frozen=True)
class Result:
    value: Any
    error: str | None  # why the line was not a usable result; value is None then


@dataclass(frozen=True)
class Rejected:
    reason: str


def parse_line(line: ProtocolLine) -> Progress | Result | Rejected:
    """Interpret one protocol line. Never raises, whatever the bytes."""
    data = line.data.rstrip(b"\r")
    if data.startswith(PROGRESS_PREFIX):
        return parse_progress(data[len(PROGRESS_PREFIX) :])
    if data.startswith(RESULT_PREFIX):
        if line.truncated:
            return Result(None, f"RESULT line longer than {len(data)} bytes was cut")
        return parse_result(data[len(RESULT_PREFIX) :])
    return Rejected("not a protocol line")


async def parse_last_result(line: ProtocolLine | None) -> Result | None:
    """A child's last RESULT line, parsed once it has ended (None without one). Parsing
    and checking a large one takes a second or two of Python: in a thread, so the loop
    every slot shares keeps its turns."""
    if line is None:
        return None
    if len(line.data) > THREADED_RESULT_BYTES:
        parsed = await asyncio.to_thread(parse_line, line)
    else:
        parsed = parse_line(line)
    return parsed if isinstance(parsed, Result) else None


def parse_progress(
    rest: bytes, room: int = MESSAGE_LIMIT, *, truncated: bool = False
) -> Progress | Rejected:
    """A PROGRESS line's value and the first `room` characters of its message (whether
    there was more, or the line itself was `truncated`, is the Progress's `cut`)."""
    text = rest.strip()
    number, _, message = text.partition(b" ")
    if not _NUMBER.fullmatch(number):
        return Rejected("progress is not a number in 0..100")
    raw = message.strip()
    msg = raw[: 4 * room].decode("utf-8", errors="replace")
    cut = bool(msg) and (truncated or len(msg) > room or len(raw) > 4 * room)
    return Progress(float(number), msg[:room] or None, cut)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        # The number itself is not quoted: it is the child's text, and could be a secret.
        raise ValueError(f"a number of {len(text)} characters is beyond a float's range")
    return number


def _encodes(value: Any) -> bool:
    try:
        strict_json(value)
    except ValueError:
        return False
    return True


def parse_result(rest: bytes) -> Result:
    """A RESULT line's JSON value, in UTF-8 (undecodable bytes become U+FFFD, as in every
    other text a child sends). NaN, Infinity and numbers beyond a float's range are
    refused: JSON has no such numbers and the status store could not hold them. A lone
    surrogate escape in a string becomes U+FFFD too."""
    text = rest.decode("utf-8", errors="replace")
    try:
        value = json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        return Result(None, f"RESULT is not valid JSON: {str(exc)[:200]}")
    # As deep as a payload may be, at most: the record, the outbox, the status store and
    # the API all walk it.
    if json_nested_too_deep(text, value):
        return Result(None, f"RESULT is nested deeper than {MAX_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(text) and not _encodes(value):
        value = replace_surrogates(value, max_depth=MAX_DEPTH + 1)  # every depth allowed
    return Result(value, None)


# ---- progress state -----------------------------------------------------------------------


class ProgressState:
    """Monotonic progress: a lower value than the last one is rejected."""

    def __init__(self) -> None:
        self.percent = 0.0
        self.message: str | None = None
        self.message_cut = False
        self.lines = 0
        self.rejected = 0

    def apply(self, update: Progress | Rejected) -> bool:
        """Record one PROGRESS line; True when it changed what callers should see."""
        self.lines += 1
        if isinstance(update, Rejected) or update.percent < self.percent:
            self.rejected += 1
            return False
        changed = (update.percent, update.message, update.cut) != (
            self.percent,
            self.message,
            self.message_cut,
        )
        self.percent, self.message, self.message_cut = update.percent, update.message, update.cut
        return changed or self.lines == 1
