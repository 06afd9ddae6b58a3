"""Failures mapped to the child protocol's exit codes (sysexits.h)."""

from __future__ import annotations

EX_DATAERR = 65
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78


class WorkerError(Exception):
    """A failure with a message fit for stderr and the job's error column."""

    exit_code = 1


class BadInput(WorkerError):
    """The job itself is wrong (unknown type, unreadable file, disallowed URL): never retry."""

    exit_code = EX_DATAERR


class TempFail(WorkerError):
    """Trouble that may pass (timeouts, 5xx, store unavailable): retry while attempts remain."""

    exit_code = EX_TEMPFAIL


class ConfigError(WorkerError):
    """The operator's configuration is wrong; every job would fail the same way."""

    exit_code = EX_CONFIG
