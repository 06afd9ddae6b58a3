"""Request and response models: what the OpenAPI document shows and what responses carry.

Request bodies are validated by `supervisor.queue.payload.validate_payload`, not by these models, so
a rejected payload's message is exactly the protocol's; `JobPayload` documents the shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from supervisor.queue.states import JobState, TableStatus


class DataSource(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "file", "url", "crawl"] = Field(
        description="kind of source; other fields depend on it (url, path, text, ...)"
    )


class JobPayload(BaseModel):
    """A job as enqueued. Secret-named keys (trial_token, ...) are never echoed back."""

    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    tenant_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]{1,128}$")
    data_source: DataSource
    priority: Literal["high", "normal"] = "normal"
    metadata: dict[str, Any] | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    trial_token: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="the old producer's secret: handed to the child, redacted everywhere else",
    )


class JobBatch(BaseModel):
    jobs: list[JobPayload] = Field(
        min_length=1,
        description="at most INGEST_API_MAX_BATCH_JOBS (default 1000); job_ids distinct",
        json_schema_extra={"uniqueItems": True},
    )


class Enqueued(BaseModel):
    job_id: str
    status: Literal["queued"] = "queued"


class Job(BaseModel):
    """A job's current state in the queue (the status table shows the same as `status`)."""

    job_id: str
    queue: str
    tenant_id: str
    priority: str
    state: JobState
    status: TableStatus = Field(description="the status column as the web app reads it")
    progress: float = Field(ge=0, le=100)
    message: str | None = Field(description="latest progress message")
    attempt: int
    max_attempts: int
    error: str | None
    result: Any = None
    worker_id: str | None
    cancel_requested: bool
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    due_at: datetime | None = Field(description="when a delayed job becomes ready")
    payload: dict[str, Any] | None = Field(
        default=None, description="the payload with secret-named values redacted"
    )


class BatchItem(BaseModel):
    job_id: str
    created: bool
    state: JobState
    status: TableStatus


class BatchResult(BaseModel):
    created: int
    existing: int
    jobs: list[BatchItem]


class JobPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at end")


class CancelResult(BaseModel):
    job_id: str
    outcome: Literal["cancelled", "requested"] = Field(
        description="cancelled: it was not running; requested: its supervisor was told to stop it"
    )


class RetryResult(BaseModel):
    job_id: str
    state: Literal["waiting"] = "waiting"


class PurgeResult(BaseModel):
    queue: str
    state: JobState
    removed: int


class QueueCounts(BaseModel):
    waiting: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    delayed: int = 0


class HealthDetails(BaseModel):
    redis_status: str = Field(description="ready, readonly, timeout or error")
    queue_counts: QueueCounts | None = Field(
        description="jobs per state; null when they could not be read in time"
    )
    worker_concurrency: int = Field(description="sum of live supervisors' slots")


class QueueHealth(BaseModel):
    healthy: bool
    redis: bool
    queue: bool
    worker: bool
    details: HealthDetails
    reasons: list[str] = Field(
        default_factory=list, description="why the check is unhealthy, one line per failed probe"
    )


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    redis_status: str


class Worker(BaseModel):
    model_config = ConfigDict(extra="allow")
    worker_id: str
    host: str | None = None
    pid: int | None = None
    slots: int = 0
    busy: int = 0
    queue: str | None = None
    beat_at: float | None = None
    stopping: bool = False


class Workers(BaseModel):
    workers: list[Worker]
    total_slots: int
    busy_slots: int


class ErrorBody(BaseModel):
    detail: str
    field: str | None = Field(default=None, description="offending field (dotted path)")
    rule: str | None = Field(default=None, description="the rule it broke")
