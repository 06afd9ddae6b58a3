"""The systemd notify protocol, spoken directly over the socket (no libsystemd needed).

systemd passes `NOTIFY_SOCKET` (a filesystem path, or `@name` for an abstract socket) and,
with `WatchdogSec=`, `WATCHDOG_USEC`/`WATCHDOG_PID`. Each message is one datagram of
newline-separated `KEY=VALUE` lines. Outside systemd every call is a no-op, so the daemon
calls the notifier unconditionally. A failed send never raises: losing a status line must
not take down a daemon that is running jobs, so the first failure is logged and later ones
only at debug level.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

# Variables that describe *this* process's relationship with systemd. A child inheriting
# them could send READY/STOPPING for the daemon, or pass socket activation on by accident.
_NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_LISTEN_PREFIX = "LISTEN_"


def scrub_env(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` without the notify, watchdog and socket-activation variables."""
    return {
        k: v for k, v in env.items() if k not in _NOTIFY_VARS and not k.startswith(_LISTEN_PREFIX)
    }


def _socket_address(raw: str) -> str | None:
    if raw.startswith("@"):
        # Abstract namespace: systemd writes '@', the kernel wants a leading NUL byte.
        return "\0" + raw[1:]
    if raw.startswith("/"):
        return raw
    return None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "").strip()
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID", "").strip()
    # A watchdog meant for another process (e.g. inherited through a wrapper) is not ours.
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 1_000_000 if value > 0 else None


class SystemdNotifier:
    """Sends sd_notify messages to the socket systemd gave us; a no-op without one."""

    def __init__(self, notify_socket: str | None, watchdog_interval_s: float | None = None):
        self._address = _socket_address(notify_socket) if notify_socket else None
        if notify_socket and self._address is None:
            log.warning("ignoring NOTIFY_SOCKET=%r: unsupported address", notify_socket)
        self._watchdog_interval_s = watchdog_interval_s if self._address else None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(
        cls,
        environ: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = True,
    ) -> SystemdNotifier:
        """Read the notify settings, then (by default) remove them from the environment so
        nothing this process spawns later inherits them, as sd_notify(unset_environment=1)."""
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        notifier = cls(env.get("NOTIFY_SOCKET") or None, _watchdog_interval(env))
        if unset_environment:
            for name in _NOTIFY_VARS:
                env.pop(name, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval_s(self) -> float | None:
        """The full watchdog interval in seconds, or None when no watchdog is armed.
        Ping at half of it, so one late loop iteration does not get the daemon killed."""
        return self._watchdog_interval_s

    def notify(self, *fields: str) -> bool:
        """Send one datagram of `KEY=VALUE` fields; True if it went out."""
        if self._address is None:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop on a slow or wedged manager.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message, self._address)
        except OSError as exc:
            self._failed(exc)
            return False
        return True

    def _failed(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("systemd notify failed (further failures logged at debug): %s", exc)
        else:
            log.debug("systemd notify failed: %s", exc)

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more from now (only honoured while starting or stopping)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    # A newline would start a new field and could smuggle e.g. READY=1 into a status text.
    return " ".join(text.splitlines())
