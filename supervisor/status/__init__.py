"""Job status in the `ingestion_jobs` table: backends, the background writer, the sink."""

from supervisor.status.backend import (
    BACKEND_KINDS,
    NoneBackend,
    StatusBackend,
    StatusStoreError,
    build_status_backend,
    open_backend,
)
from supervisor.status.producer import queued_update, write_queued
from supervisor.status.sink import StatusSink
from supervisor.status.update import StatusUpdate, merge
from supervisor.status.writer import StatusWriter, WriterStats

__all__ = [
    "BACKEND_KINDS",
    "NoneBackend",
    "StatusBackend",
    "StatusSink",
    "StatusStoreError",
    "StatusUpdate",
    "StatusWriter",
    "WriterStats",
    "build_status_backend",
    "merge",
    "open_backend",
    "queued_update",
    "write_queued",
]
