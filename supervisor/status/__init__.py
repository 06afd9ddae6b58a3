"""Job status in the `ingestion_jobs` table: rows projected from the queue's status outbox."""

from supervisor.status.backend import NoneBackend, StatusBackend, StatusStoreError
from supervisor.status.factory import BACKEND_KINDS, build_status_backend, open_backend
from supervisor.status.update import StatusUpdate

__all__ = [
    "BACKEND_KINDS",
    "NoneBackend",
    "StatusBackend",
    "StatusStoreError",
    "StatusUpdate",
    "build_status_backend",
    "open_backend",
]
