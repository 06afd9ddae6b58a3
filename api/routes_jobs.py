"""Job endpoints: enqueue (one or a batch), read, list, cancel, retry."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from api.auth import Access, ReadAccess, WriteAccess, require_read, require_write
from api.context import ApiContext, bounded, get_context
from api.errors import E401, E403, E404, E409, E413, E415, E422, E503, ApiError, payload_error
from api.models import (
    BatchItem,
    BatchResult,
    CancelResult,
    Enqueued,
    ErrorBody,
    Job,
    JobPage,
    RetryResult,
)
from api.views import job_view
from supervisor.queue.payload import (
    DEPTH_RULE,
    JOB_ID_RE,
    PayloadError,
    TenantConflict,
    validate_job_id,
    validate_payload,
)
from supervisor.queue.reads import PAGE_BYTES
from supervisor.queue.states import JobState, table_status

router = APIRouter(tags=["jobs"])
Ctx = Annotated[ApiContext, Depends(get_context)]
# The pattern is documented but checked by the protocol's validator, so a bad id gets the
# protocol's own message.
JobId = Annotated[
    str,
    Path(
        description="the job's id",
        min_length=1,
        max_length=128,
        json_schema_extra={"pattern": JOB_ID_RE.pattern},
    ),
]

# Listing without a state walks these in turn; the cursor says where it stopped.
LIST_ORDER: tuple[JobState, ...] = (
    JobState.ACTIVE,
    JobState.WAITING,
    JobState.DELAYED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.COMPLETED,
)


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        # The decoder's message can quote the input, which may hold a secret: say only where.
        raise ApiError(
            422, "body: must be valid JSON", field="body", rule="must be valid JSON"
        ) from None
    except RecursionError:  # nested deeper than the decoder goes: far beyond the rule
        raise ApiError(422, f"body: {DEPTH_RULE}", field="body", rule=DEPTH_RULE) from None


def _request_body(schema: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


def _own_tenant(access: Access, payload: dict[str, Any], field: str) -> None:
    if not access.sees(payload["tenant_id"]):
        raise ApiError(
            403, f"{field}: this token enqueues only tenant {access.tenant}", field=field
        )


def _job_id_or_422(job_id: str) -> str:
    try:
        return validate_job_id(job_id)
    except PayloadError as exc:
        raise payload_error(exc) from None


@router.post(
    "/jobs",
    status_code=202,
    response_model=Enqueued,
    summary="Enqueue one job (idempotent on job_id)",
    dependencies=[Depends(require_write)],
    responses={
        200: {"model": Job, "description": "a job with this id exists; nothing was created"},
        409: {
            "model": ErrorBody,
            "description": "a job with this id exists for another tenant; nothing was created",
        },
        **E401,
        **E403,
        **E409,
        **E413,
        **E415,
        **E422,
        **E503,
    },
    openapi_extra=_request_body("JobPayload"),
)
async def enqueue_job(request: Request, ctx: Ctx, access: WriteAccess) -> JSONResponse:
    payload = _json_body(await request.body())
    try:
        valid = validate_payload(payload, ctx.queue.is_secret)
        _own_tenant(access, valid, "tenant_id")
        result = await bounded(ctx.queue.enqueue(valid))
    except PayloadError as exc:
        raise payload_error(exc) from None
    if result.created:
        return JSONResponse(
            Enqueued(job_id=result.job_id).model_dump(),
            status_code=202,
            headers={"Location": f"/jobs/{result.job_id}"},
        )
    rec = await bounded(ctx.queue.get(result.job_id, with_payload=True))
    if rec is None and result.job_id in await bounded(ctx.queue.known_jobs([result.job_id])):
        # A stored record this version cannot read: taken, and nothing to show of it.
        raise ApiError(409, f"job id {result.job_id} is taken; choose another")
    if rec is None:
        # Dropped by retention between the two calls: the caller may simply repeat.
        raise ApiError(503, "job changed while being read; try again")
    if not access.sees(rec.tenant_id):
        raise ApiError(409, f"job id {result.job_id} is taken; choose another")
    view = job_view(rec, ctx.queue.queue, ctx.settings.secret_keys)
    return JSONResponse(view.model_dump(mode="json"), status_code=200)


@router.post(
    "/jobs:batch",
    status_code=202,
    response_model=BatchResult,
    summary="Enqueue many jobs at once: all are valid and stored, or none is",
    dependencies=[Depends(require_write)],
    responses={
        200: {"model": BatchResult, "description": "every job already existed"},
        409: {
            "model": ErrorBody,
            "description": "an id exists for another tenant; no job of the batch was created",
        },
        **E401,
        **E403,
        **E413,
        **E415,
        **E422,
        **E503,
    },
    openapi_extra=_request_body("JobBatch"),
)
async def enqueue_batch(request: Request, ctx: Ctx, access: WriteAccess) -> JSONResponse:
    body = _json_body(await request.body())
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(jobs, list) or not jobs:
        raise ApiError(
            422, "jobs: must be a non-empty list", field="jobs", rule="must be a non-empty list"
        )
    if len(jobs) > ctx.settings.max_batch_jobs:
        rule = f"must hold at most {ctx.settings.max_batch_jobs} jobs"
        raise ApiError(422, f"jobs: {rule}", field="jobs", rule=rule)
    valid: list[dict[str, Any]] = []
    index: dict[str, int] = {}  # job id -> where in the batch, to name it in an error
    for i, raw in enumerate(jobs):
        try:
            valid.append(validate_payload(raw, ctx.queue.is_secret))
            _own_tenant(access, valid[-1], f"jobs[{i}].tenant_id")
            job_id = valid[-1]["job_id"]
            if job_id in index:
                raise PayloadError("job_id", f"{job_id!r} appears twice in one batch")
            index[job_id] = i
        except PayloadError as exc:
            raise payload_error(exc, prefix=f"jobs[{i}].") from None
    try:
        results = await bounded(ctx.queue.enqueue_many(valid))
    except PayloadError as exc:
        where = index.get(exc.job_id) if isinstance(exc, TenantConflict) else None
        raise payload_error(exc, prefix="jobs[]." if where is None else f"jobs[{where}].") from None
    created_ids = {r.job_id for r in results if r.created}
    out = BatchResult(
        created=len(created_ids),
        existing=len(results) - len(created_ids),
        jobs=[
            BatchItem(
                job_id=r.job_id, created=r.created, state=r.state, status=table_status(r.state)
            )
            for r in results
        ],
    )
    return JSONResponse(out.model_dump(mode="json"), status_code=202 if created_ids else 200)


@router.get(
    "/jobs/{job_id}",
    response_model=Job,
    summary="A job's state, progress, attempts, error and result",
    dependencies=[Depends(require_read)],
    responses={**E401, **E404, **E422, **E503},
)
async def get_job(job_id: JobId, ctx: Ctx, access: ReadAccess) -> Job:
    rec = await bounded(ctx.queue.get(_job_id_or_422(job_id), with_payload=True))
    if rec is None or not access.sees(rec.tenant_id):
        raise ApiError(404, f"job {job_id} not found")
    return job_view(rec, ctx.queue.queue, ctx.settings.secret_keys)


def _parse_cursor(cursor: str | None, states: tuple[JobState, ...]) -> tuple[int, int]:
    if not cursor:
        return 0, 0
    name, _, offset = cursor.partition(":")
    rule = "must be a next_cursor value from a previous page"
    try:
        idx = [s.value for s in states].index(name)
        n = int(offset)
    except ValueError:
        raise ApiError(422, f"cursor: {rule}", field="cursor", rule=rule) from None
    if n < 0 or n > 10**12:
        raise ApiError(422, f"cursor: {rule}", field="cursor", rule=rule)
    return idx, n


@router.get(
    "/jobs",
    response_model=JobPage,
    summary="List jobs, in one state or all of them, a page at a time",
    description="With `tenant_id` or `job_id_prefix`, or with a tenant-scoped token (which "
    "lists its own tenant's jobs), each page examines at most `scan` jobs (Redis holds no "
    "index by tenant or id); and any page stops before it would read more than 8 MiB of "
    "stored job records (they hold the results). So a page may hold fewer than `limit` "
    "jobs and still carry a `next_cursor`: follow it to go on.",
    dependencies=[Depends(require_read)],
    responses={**E401, **E422, **E503},
)
async def list_jobs(
    ctx: Ctx,
    access: ReadAccess,
    state: Annotated[JobState | None, Query(description="only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    tenant_id: Annotated[str | None, Query(max_length=128, description="only this tenant")] = None,
    job_id_prefix: Annotated[
        str, Query(max_length=128, description="only ids starting with this")
    ] = "",
    order: Annotated[
        Literal["asc", "desc"] | None,
        Query(
            description="by each state's time (enqueue order, due time, lease deadline, finish "
            "time); default: oldest first for waiting, delayed and active, newest first for "
            "finished states"
        ),
    ] = None,
    scan: Annotated[int, Query(ge=1, le=10_000, description="jobs examined per page")] = 1000,
) -> JobPage:
    states = (state,) if state is not None else LIST_ORDER
    idx, offset = _parse_cursor(cursor, states)
    if access.tenant is not None:
        # A scoped token lists its own tenant's jobs: no other tenant's result is decoded.
        if tenant_id not in (None, access.tenant):
            return JobPage(jobs=[], next_cursor=None)
        tenant_id = access.tenant
    newest_first = None if order is None else order == "desc"
    jobs: list[Job] = []
    next_cursor: str | None = None
    budget, byte_budget = scan, PAGE_BYTES
    while idx < len(states):
        page = await bounded(
            ctx.queue.scan_jobs(
                states[idx],
                limit=limit - len(jobs),
                cursor=offset,
                newest_first=newest_first,
                tenant_id=tenant_id,
                id_prefix=job_id_prefix,
                budget=budget,
                max_bytes=byte_budget,
            )
        )
        budget -= page.examined
        byte_budget -= page.bytes_read
        # A tenant-scoped token sees its own jobs only: its pages may hold fewer than `limit`.
        jobs.extend(
            job_view(r, ctx.queue.queue, ctx.settings.secret_keys)
            for r in page.jobs
            if access.sees(r.tenant_id)
        )
        if page.next_cursor is not None:
            next_cursor = f"{states[idx].value}:{page.next_cursor}"
            break
        idx, offset = idx + 1, 0
        if len(jobs) >= limit or budget <= 0 or byte_budget <= 0:
            next_cursor = f"{states[idx].value}:0" if idx < len(states) else None
            break
    return JobPage(jobs=jobs, next_cursor=next_cursor)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=CancelResult,
    summary="Cancel a job: at once if not running, else its supervisor stops it",
    dependencies=[Depends(require_write)],
    responses={
        202: {"model": CancelResult, "description": "running: cancel requested"},
        **E401,
        **E404,
        **E409,
        **E415,
        **E422,
        **E503,
    },
)
async def cancel_job(job_id: JobId, ctx: Ctx, access: WriteAccess) -> JSONResponse:
    # The tenant is checked in the same script as the change: another tenant's job is
    # missing, as for a read.
    outcome = await bounded(ctx.queue.cancel(_job_id_or_422(job_id), tenant=access.tenant))
    if outcome == "missing":
        raise ApiError(404, f"job {job_id} not found")
    if outcome not in ("cancelled", "requested"):
        raise ApiError(409, f"job {job_id} is {outcome}; it cannot be cancelled")
    body = CancelResult(job_id=job_id, outcome=outcome).model_dump()  # type: ignore[arg-type]
    return JSONResponse(body, status_code=200 if outcome == "cancelled" else 202)


@router.post(
    "/jobs/{job_id}/retry",
    response_model=RetryResult,
    summary="Queue a failed or cancelled job again (already waiting: nothing to do, 200)",
    dependencies=[Depends(require_write)],
    responses={**E401, **E404, **E409, **E415, **E422, **E503},
)
async def retry_job(job_id: JobId, ctx: Ctx, access: WriteAccess) -> RetryResult:
    outcome = await bounded(ctx.queue.retry(_job_id_or_422(job_id), tenant=access.tenant))
    if outcome == "missing":
        raise ApiError(404, f"job {job_id} not found")
    if outcome not in ("requeued", "waiting"):  # waiting already: nothing to do
        raise ApiError(409, f"job {job_id} is {outcome}; only failed or cancelled jobs can retry")
    return RetryResult(job_id=job_id)
