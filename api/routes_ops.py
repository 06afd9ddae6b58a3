"""Operations endpoints: health, workers, metrics, events, purge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse

from api.auth import Access, ReadAccess, WriteAccess, require_read, require_write
from api.context import ApiContext, bounded, get_context
from api.errors import E401, E403, E404, E409, E422, E429, E503, ApiError, payload_error
from api.events import event_stream
from api.health import queue_health, readiness
from api.metrics import CONTENT_TYPE
from api.models import Liveness, PurgeResult, QueueHealth, Readiness, Worker, Workers
from api.streams import ANONYMOUS, HeldStream, StreamSlots
from supervisor.queue.keys import QUEUE_NAME_RE, QueueKeys
from supervisor.queue.payload import PayloadError, validate_job_id
from supervisor.queue.states import JobState

router = APIRouter()
# Finished jobs only: their status rows are already final, and a purge deletes just the
# Redis records (job, payload, state-set entry), never a row.
PURGEABLE = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
# Jobs one /events stream may follow: each costs a read and a redacted snapshot at its start.
MAX_STREAM_JOBS = 100
Ctx = Annotated[ApiContext, Depends(get_context)]


@router.get(
    "/health/queue",
    response_model=QueueHealth,
    tags=["health"],
    summary="Queue health for load balancers and uptime checks (200 healthy, 503 not)",
    responses={503: {"model": QueueHealth, "description": "unhealthy; the body says why"}},
)
async def health_queue(ctx: Ctx) -> JSONResponse:
    health = await queue_health(ctx)
    return JSONResponse(health.model_dump(), status_code=200 if health.healthy else 503)


@router.get("/health/live", response_model=Liveness, tags=["health"], summary="Process is up")
async def health_live() -> Liveness:
    return Liveness()


@router.get(
    "/health/ready",
    response_model=Readiness,
    tags=["health"],
    summary="Ready to serve: Redis answers",
    responses={503: {"model": Readiness, "description": "Redis unreachable or too slow"}},
)
async def health_ready(ctx: Ctx) -> JSONResponse:
    ready = await readiness(ctx)
    return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503)


@router.get(
    "/workers",
    response_model=Workers,
    tags=["ops"],
    summary="Live supervisors, from their heartbeats",
    dependencies=[Depends(require_read)],
    responses={**E401, **E403, **E503},
)
async def workers(ctx: Ctx, access: ReadAccess) -> Workers:
    access.require_admin()
    live = await bounded(ctx.queue.live_workers())
    items = [Worker.model_validate({"worker_id": "?", **w}) for w in live]
    return Workers(
        workers=items,
        total_slots=sum(w.slots for w in items if not w.stopping),
        busy_slots=sum(w.busy for w in items),
    )


@router.get(
    "/metrics",
    tags=["ops"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(ctx: Ctx) -> Response:
    body = await ctx.metrics.render(ctx.health_queue, timeout_s=1.0)
    return Response(body, media_type=CONTENT_TYPE)


@router.get(
    "/events",
    tags=["ops"],
    summary="Server-sent events of job changes (optionally only some jobs)",
    dependencies=[Depends(require_read)],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "text/event-stream; `id` is the stream entry id (resume with "
            "Last-Event-ID); event names are the protocol's (enqueued, started, progress, "
            "completed, failed, retried, cancelled, ...) plus `snapshot` for each watched job",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **E401,
        **E404,
        **E422,
        **E429,
        **E503,
    },
)
async def events(
    ctx: Ctx,
    access: ReadAccess,
    job_id: Annotated[list[str] | None, Query(description="only these jobs")] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> StreamingResponse:
    owner = _stream_owner(access)
    if owner is not None and ctx.streams.full(owner):  # before any Redis call
        raise _too_many_streams(ctx.streams, owner)
    if job_id is not None and len(job_id) > MAX_STREAM_JOBS:
        rule = f"at most {MAX_STREAM_JOBS} per stream"
        raise ApiError(422, f"job_id: {rule}", field="job_id", rule=rule)
    ids: set[str] = set()
    for j in job_id or []:
        try:
            ids.add(validate_job_id(j))
        except PayloadError as exc:
            raise payload_error(exc) from None
    not_before: dict[str, int] | None = None
    if access.tenant is not None:
        # A scoped token follows its own jobs only, each checked here, and from the start
        # of the job's current run only (an id reused after another tenant's job); the
        # stream then sends only entries that name its tenant.
        if not ids:
            rule = "is required with a tenant-scoped token"
            raise ApiError(422, f"job_id: {rule}", field="job_id", rule=rule)
        not_before = {}
        for j in ids:
            rec = await bounded(ctx.queue.get(j))
            if rec is None or not access.sees(rec.tenant_id):
                raise ApiError(404, f"job {j} not found")
            not_before[j] = int(rec.enqueued_at * 1000)
    if owner is not None and not ctx.streams.take(owner):
        raise _too_many_streams(ctx.streams, owner)
    return HeldStream(
        event_stream(ctx, frozenset(ids), last_event_id, not_before, access.tenant),
        on_end=lambda: ctx.streams.give_back(owner),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _stream_owner(access: Access) -> str | None:
    """Whose count of open streams a caller's stream goes to: its tenant's, that of every
    caller without a token together, or none (the all-tenant token)."""
    return ANONYMOUS if access.anonymous else access.tenant


def _too_many_streams(slots: StreamSlots, owner: str) -> ApiError:
    limit = slots.limit(owner)
    who = "for callers without a token" if owner == ANONYMOUS else "per tenant"
    return ApiError(
        429,
        f"at most {limit} event streams open at once {who}; close one first",
        rule=f"<= {limit} open streams",
    )


@router.delete(
    "/queues/{queue}/jobs",
    response_model=PurgeResult,
    tags=["ops"],
    summary="Delete from Redis every job of this API's queue in one finished state",
    description="Only the queue this API serves (INGEST_QUEUE), only completed, failed or "
    "cancelled jobs. Their status rows in `ingestion_jobs` are left as they are (final).",
    dependencies=[Depends(require_write)],
    responses={**E401, **E403, **E404, **E409, **E422, **E503},
)
async def purge(
    ctx: Ctx,
    access: WriteAccess,
    queue: Annotated[
        str, Path(min_length=1, max_length=64, json_schema_extra={"pattern": QUEUE_NAME_RE.pattern})
    ],
    state: Annotated[JobState, Query(description="state whose jobs are deleted")],
) -> PurgeResult:
    try:
        QueueKeys(queue)
    except ValueError:
        rule = "must be 1-64 characters of letters, digits, '_.:-'"
        raise ApiError(422, f"queue: {rule}", field="queue", rule=rule) from None
    access.require_admin()
    if queue != ctx.queue.queue:
        raise ApiError(404, f"queue {queue} is not this API's queue (INGEST_QUEUE)")
    if state not in PURGEABLE:
        raise ApiError(
            409,
            f"{state.value} jobs cannot be purged: cancel them instead "
            "(a purge would leave their status rows unfinished)",
        )
    removed = await bounded(ctx.queue.purge(state), timeout_s=30.0)
    return PurgeResult(queue=queue, state=state, removed=removed)
