"""How far the status outbox may be trimmed, and how far behind its projection is.

Nothing the projectors' consumer group has not acknowledged is ever trimmed: the trim
point is the oldest entry that is pending (delivered, not acknowledged) or not yet
delivered in that group. Other groups on the stream are not readers we serve and do not
hold it back. A stream without the group (status writing turned off in every daemon,
backend `none`) has no reader: all but its last NO_READER_KEEP_S go. That minute is for
the projecting daemons of a mixed fleet, whose group is missing for a few seconds after
Redis restarted empty.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from supervisor.queue.connection import AnyRedis
from supervisor.queue.records import as_str
from supervisor.status.outbox import GROUP

NO_READER_KEEP_S = 60.0
# Entries after a group's last delivered one that are counted, where Redis reports no lag.
UNDELIVERED_COUNTED = 1000


@dataclass(frozen=True)
class OutboxState:
    length: int  # entries in the stream
    unprojected: int  # entries pending or not yet delivered (upper bound: length)
    oldest_unprojected_ms: int | None  # stream-id time of the oldest such entry
    safe_trim_id: str | None  # entries older than this id may go; None: trim nothing
    has_group: bool
    # Redis's clock when the state was read (stream ids are stamped on it); None: unknown.
    read_at_ms: int | None = None

    def age_s(self, now_ms: float | None = None) -> float:
        """How long the oldest unprojected entry has waited, on Redis's clock when it is
        known (a daemon's own clock may be off by minutes)."""
        if self.oldest_unprojected_ms is None:
            return 0.0
        if now_ms is None:
            now_ms = time.time() * 1000 if self.read_at_ms is None else self.read_at_ms
        return max(0.0, (now_ms - self.oldest_unprojected_ms) / 1000.0)


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as (Redis clock ms, sequence), in the stream's order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def outbox_state(client: AnyRedis, stream: str) -> OutboxState:
    length = int(await client.xlen(stream))
    try:
        groups: list[dict[str, Any]] = await client.xinfo_groups(stream)
    except Exception as exc:  # no such key: redis answers an error for XINFO on it
        if "no such key" in str(exc).lower():
            return OutboxState(0, 0, None, None, has_group=False)
        raise
    groups = [g for g in groups if as_str(g["name"]) == GROUP]
    if not groups:
        last = await client.xrevrange(stream, count=1)
        newest = as_str(last[0][0]) if last else None
        return OutboxState(length, 0, None, newest, has_group=False)
    oldest: str | None = None
    unprojected = 0
    for group in groups:
        name = as_str(group["name"])
        pending = int(group.get("pending", 0))
        candidates: list[str] = []
        if pending:
            summary: Any = await client.xpending(stream, name)
            if summary and summary.get("min"):
                candidates.append(as_str(summary["min"]))
        last_delivered = as_str(group.get("last-delivered-id", "0-0"))
        lag = group.get("lag")
        # Redis before 7 reports no lag: the entries after the last delivered one are
        # counted, up to a bound; past it the whole stream is the estimate (an upper one,
        # by the projected entries not yet trimmed).
        counted = 1 if isinstance(lag, int) else UNDELIVERED_COUNTED
        after = await client.xrange(stream, min=f"({last_delivered}", count=counted) or []
        if after:
            candidates.append(as_str(after[0][0]))
        if isinstance(lag, int):
            undelivered = lag
        else:
            undelivered = len(after) if len(after) < counted else length
        unprojected = max(unprojected, pending + undelivered)
        if not candidates:
            # Everything delivered and acknowledged: keep only what comes after.
            candidates.append(last_delivered)
        group_oldest = min(candidates, key=entry_id_key)
        if oldest is None or entry_id_key(group_oldest) < entry_id_key(oldest):
            oldest = group_oldest
    assert oldest is not None
    behind = unprojected > 0
    return OutboxState(
        length,
        min(unprojected, length),
        entry_id_key(oldest)[0] if behind else None,
        oldest,
        has_group=True,
    )


async def trim_outbox(client: AnyRedis, stream: str, state: OutboxState) -> int:
    """Drop entries older than the state's safe trim point; returns how many went.

    With no group, the entries older than NO_READER_KEEP_S on Redis's clock when the state
    was read (none when that time is unknown), up to the newest one seen.
    """
    if state.safe_trim_id is None or state.safe_trim_id == "0-0":
        return 0
    if not state.has_group:
        if state.read_at_ms is None:
            return 0
        ms, seq = entry_id_key(state.safe_trim_id)
        keep_from = (state.read_at_ms - int(NO_READER_KEEP_S * 1000), 0)
        ms, seq = min((ms, seq + 1), keep_from)
        return int(await client.xtrim(stream, minid=f"{ms}-{seq}", approximate=False))
    return int(await client.xtrim(stream, minid=state.safe_trim_id, approximate=False))
