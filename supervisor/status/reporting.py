"""What a status projector reports: hooks it calls (the daemon's metrics) and its counts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from supervisor.status.trim import OutboxState


@dataclass
class ProjectorStats:
    rejected: int = 0  # rows the store refused as invalid (acknowledged, logged)
    bad_entries: int = 0  # outbox entries that were not rows (acknowledged, logged)
    claimed: int = 0  # entries taken over from other consumers
    parked: int = 0  # rows of locked jobs handed to the reconciler while the rest went on


@dataclass(frozen=True)
class ProjectorHooks:
    """Where the projector reports to (metrics); every hook must return at once."""

    on_request: Callable[[int, float, bool], None] = lambda _n, _s, _ok: None
    on_lag: Callable[[float], None] = lambda _s: None
    on_outbox: Callable[[OutboxState], None] = lambda _state: None
    on_parked: Callable[[int], None] = lambda _rows: None
    on_rejected: Callable[[int], None] = lambda _n: None
