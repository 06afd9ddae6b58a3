"""Turning stored job records into response models, with every secret removed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from api.models import Job
from supervisor.queue.jobqueue import JobRecord
from supervisor.queue.records import as_utc
from supervisor.queue.redacted import redacted_texts
from supervisor.queue.redaction import DEFAULT_SECRET_KEYS, SecretKeys
from supervisor.queue.states import table_status


def job_view(rec: JobRecord, queue: str, extra_secret_keys: Iterable[str] = ()) -> Job:
    keys = SecretKeys(DEFAULT_SECRET_KEYS | frozenset(extra_secret_keys))
    return Job(
        job_id=rec.job_id,
        queue=queue,
        tenant_id=rec.tenant_id,
        priority=rec.priority,
        state=rec.state,
        status=table_status(rec.state),
        progress=min(100.0, max(0.0, rec.progress)),
        attempt=rec.attempt,
        max_attempts=rec.max_attempts,
        worker_id=rec.worker_id,
        cancel_requested=rec.cancel_requested,
        enqueued_at=as_utc(rec.enqueued_at) or datetime.fromtimestamp(0, UTC),
        started_at=as_utc(rec.started_at),
        finished_at=as_utc(rec.finished_at),
        due_at=as_utc(rec.due_at),
        **redacted_texts(rec, keys),
    )
