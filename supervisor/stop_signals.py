"""Stop signals that arrive while the daemon starts: kept until its event loop handles
them, so that a stop during start-up (settings, the fork server, imports) is a clean stop
rather than death by the signal's default action. Standard library only: installed
before anything heavy is imported."""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_received: list[int] = []


def hold() -> None:
    """From now on a stop signal is recorded, not acted on, until the daemon takes over."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _keep)


def _keep(sig: int, _frame: object) -> None:
    _received.append(sig)


def received() -> list[int]:
    """The stop signals recorded so far, oldest first."""
    return list(_received)
