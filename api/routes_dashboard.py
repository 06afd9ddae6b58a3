"""Endpoints the dashboard needs that the job and ops routes do not serve: queue stats,
throughput, one job's event history, dead letters grouped by error, and retrying many jobs.

Every one does bounded work per request whatever the queue holds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from api.auth import ReadAccess, WriteAccess, require_read, require_write
from api.context import ApiContext, bounded, get_context
from api.dashboard import dead_letters, job_history, throughput
from api.errors import E401, E403, E404, E415, E422, E503, ApiError, payload_error
from api.routes_jobs import JobId, _job_id_or_422
from supervisor.queue.payload import PayloadError, validate_job_id

router = APIRouter(tags=["dashboard"])
Ctx = Annotated[ApiContext, Depends(get_context)]
MAX_RETRY_IDS = 1000


class StateCounts(BaseModel):
    waiting: int
    delayed: int
    active: int
    completed: int
    failed: int
    cancelled: int


class Stats(BaseModel):
    queue: str
    counts: StateCounts
    oldest_waiting_s: float | None = Field(description="age of the longest-waiting ready job")
    server_time: datetime = Field(description="Redis's clock, the one job times are stamped by")


class ThroughputOut(BaseModel):
    minute_starts: list[datetime] = Field(description="start of each one-minute bucket")
    completed: list[int]
    failed: list[int] = Field(description="jobs failed for good (dead letters)")
    retried: list[int] = Field(description="attempts failed with a retry scheduled")
    covered_from: datetime = Field(
        description="the events stream is capped: buckets before this hold no data"
    )
    server_time: datetime


class JobEvents(BaseModel):
    job_id: str
    events: list[dict[str, Any]] = Field(description="as /events sends them, oldest first")
    complete: bool = Field(description="false when older events left the capped stream")


class DeadLetterGroup(BaseModel):
    error: str = Field(description="first line of the error (secrets scrubbed)")
    count: int
    job_ids: list[str]
    tenants: dict[str, int]
    latest_at: datetime | None


class DeadLetters(BaseModel):
    total_failed: int
    examined: int = Field(description="newest failed jobs the groups are drawn from")
    groups: list[DeadLetterGroup]


class RetryItem(BaseModel):
    job_id: str
    outcome: str = Field(
        description="requeued (queued again), missing, or the job's state (waiting: already)"
    )


class RetryMany(BaseModel):
    retried: int
    results: list[RetryItem]


def _dt(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, UTC)


@router.get(
    "/stats",
    response_model=Stats,
    summary="Jobs per state and the oldest waiting age",
    dependencies=[Depends(require_read)],
    responses={**E401, **E403, **E503},
)
async def stats(ctx: Ctx, access: ReadAccess) -> Stats:
    access.require_admin()  # queue-wide figures: not for a tenant-scoped token
    q = ctx.queue
    counts = await bounded(q.counts())
    age = await bounded(q.oldest_waiting_age_s())
    now = await bounded(q.server_time_ms())
    return Stats(
        queue=q.queue,
        counts=StateCounts(**counts),
        oldest_waiting_s=age,
        server_time=_dt(now),
    )


@router.get(
    "/stats/throughput",
    response_model=ThroughputOut,
    summary="Completed, failed and retried per minute over the last hour (events stream)",
    dependencies=[Depends(require_read)],
    responses={**E401, **E403, **E503},
)
async def stats_throughput(ctx: Ctx, access: ReadAccess) -> ThroughputOut:
    access.require_admin()
    t = await bounded(throughput(ctx.queue))
    return ThroughputOut(
        minute_starts=[_dt(m) for m in t.minute_starts],
        completed=t.counts["completed"],
        failed=t.counts["failed"],
        retried=t.counts["retried"],
        covered_from=_dt(t.covered_from_ms),
        server_time=_dt(t.server_time_ms),
    )


@router.get(
    "/jobs/{job_id}/events",
    response_model=JobEvents,
    summary="A job's events still held by the capped events stream, oldest first",
    dependencies=[Depends(require_read)],
    responses={**E401, **E404, **E422, **E503},
)
async def job_events(job_id: JobId, ctx: Ctx, access: ReadAccess) -> JobEvents:
    rec = await bounded(ctx.queue.get(_job_id_or_422(job_id), with_payload=True))
    if rec is None or not access.sees(rec.tenant_id):  # another tenant: as if missing
        raise ApiError(404, f"job {job_id} not found")
    history = await bounded(job_history(ctx.queue, rec, ctx.settings.secret_keys))
    return JobEvents(job_id=job_id, events=history.events, complete=history.complete)


@router.get(
    "/dead-letters",
    response_model=DeadLetters,
    summary="The newest failed jobs grouped by the first line of their error",
    dependencies=[Depends(require_read)],
    responses={**E401, **E403, **E422, **E503},
)
async def list_dead_letters(
    ctx: Ctx,
    access: ReadAccess,
    scan: Annotated[int, Query(ge=1, le=5000, description="newest failed jobs to group")] = 500,
) -> DeadLetters:
    access.require_admin()  # every tenant's errors
    total, examined, groups = await bounded(
        dead_letters(ctx.queue, ctx.settings.secret_keys, scan), timeout_s=15.0
    )
    return DeadLetters(
        total_failed=total,
        examined=examined,
        groups=[
            DeadLetterGroup(
                error=g.error,
                count=g.count,
                job_ids=g.job_ids,
                tenants=g.tenants,
                latest_at=_dt(g.latest_at * 1000) if g.latest_at else None,
            )
            for g in groups
        ],
    )


@router.post(
    "/jobs:retry",
    response_model=RetryMany,
    summary="Queue many failed or cancelled jobs again (each as POST /jobs/{id}/retry)",
    dependencies=[Depends(require_write)],
    responses={**E401, **E403, **E415, **E422, **E503},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["job_ids"],
                        "properties": {
                            "job_ids": {
                                "type": "array",
                                "items": {"type": "string"},
                                "minItems": 1,
                                "maxItems": MAX_RETRY_IDS,
                            }
                        },
                    }
                }
            },
        }
    },
)
async def retry_many(request: Request, ctx: Ctx, access: WriteAccess) -> RetryMany:
    access.require_admin()
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise ApiError(
            422, "body: must be valid JSON", field="body", rule="must be valid JSON"
        ) from None
    ids = body.get("job_ids") if isinstance(body, dict) else None
    rule = f"must be a list of 1-{MAX_RETRY_IDS} job ids"
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_RETRY_IDS:
        raise ApiError(422, f"job_ids: {rule}", field="job_ids", rule=rule)
    valid: list[str] = []
    for i, job_id in enumerate(ids):
        try:
            valid.append(validate_job_id(job_id))
        except PayloadError as exc:
            raise payload_error(exc, prefix=f"job_ids[{i}].") from None
    results: list[RetryItem] = []
    for job_id in dict.fromkeys(valid):
        outcome = await bounded(ctx.queue.retry(job_id))
        results.append(RetryItem(job_id=job_id, outcome=outcome))
    return RetryMany(retried=sum(r.outcome == "requeued" for r in results), results=results)
