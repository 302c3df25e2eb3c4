"""Background jobs: submit (202), read, list, cancel, watch over SSE, and stats.

Tenant-scoped (another tenant's job is a 404; admins see every tenant's). The
work itself happens in `python -m worker` (or in this process on the embedded
default); see `core.jobs`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from api import bodies, openapi
from api.deps import PrincipalDep
from core.auth.authenticator import Principal
from core.container import ServicesDep
from core.jobs.service import JobRow

router = APIRouter(tags=["jobs"])
Status = Literal["queued", "in_progress", "success", "failed", "cancelled"]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStream(StreamingResponse):
    """Server-sent events (and documented as only that: no JSON body)."""

    media_type = "text/event-stream"


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=64)
    input: dict[str, Any] = Field(default_factory=dict)
    dedupe_key: str | None = Field(default=None, min_length=1, max_length=256)


class JobProgress(bodies.GatewayBody):
    step: str | None
    percentage: float
    current_step: int
    total_steps: int
    message: str | None


class JobError(bodies.GatewayBody):
    message: str
    type: str
    code: str


class JobObject(bodies.GatewayBody):
    id: str
    object: Literal["job"]
    type: str
    status: Status
    progress: JobProgress | None
    result: Any
    error: JobError | None
    attempts: int
    created_at: str
    started_at: str | None
    finished_at: str | None


class JobCreated(bodies.GatewayBody):
    id: str
    object: Literal["job"]
    type: str
    status: Status
    created_at: str


class JobList(bodies.GatewayBody):
    object: Literal["list"]
    data: list[JobObject]
    has_more: bool


class JobStats(bodies.GatewayBody):
    pending: int
    processing: int
    succeeded_24h: int
    failed_24h: int
    oldest_pending_seconds: float | None
    durable: bool


def _when(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite drops the zone; stored as UTC
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def job_view(row: JobRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "job",
        "type": row.type,
        "status": row.status,
        "progress": row.progress,
        "result": row.result,
        "error": row.error,
        "attempts": row.attempts,
        "created_at": _when(row.created_at),
        "started_at": _when(row.started_at),
        "finished_at": _when(row.finished_at),
    }


def _tenant(principal: Principal) -> str | None:
    return None if principal.admin else principal.tenant


@router.post("/api/v1/jobs", status_code=202, responses=openapi.ok(JobCreated, 409, status=202))
async def submit_job(
    body: JobCreate, services: ServicesDep, principal: PrincipalDep, response: Response
) -> dict[str, Any]:
    row = await services.jobs.service.submit(
        tenant=principal.tenant,
        api_key_id=principal.key_id,
        type=body.type,
        input=body.input,
        dedupe_key=body.dedupe_key,
    )
    response.headers["Location"] = f"/api/v1/jobs/{row.id}"
    return {
        "id": row.id,
        "object": "job",
        "type": row.type,
        "status": row.status,
        "created_at": _when(row.created_at),
    }


@router.get("/api/v1/jobs", responses=openapi.ok(JobList))
async def list_jobs(
    services: ServicesDep,
    principal: PrincipalDep,
    status: Status | None = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64, description="after this job")] = None,
) -> dict[str, Any]:
    rows = await services.jobs.service.list(
        tenant=_tenant(principal), status=status, type=type, limit=limit + 1, after=after
    )
    return {
        "object": "list",
        "data": [job_view(row) for row in rows[:limit]],
        "has_more": len(rows) > limit,
    }


@router.get("/api/v1/jobs/stats", responses=openapi.ok(JobStats))
async def job_stats(services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    stats = await services.jobs.service.stats(tenant=_tenant(principal))
    return {**stats, "durable": services.jobs.service.durable}


@router.get("/api/v1/jobs/{job_id}", responses=openapi.ok(JobObject, 404))
async def get_job(job_id: str, services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_view(await services.jobs.service.get(job_id, tenant=_tenant(principal)))


@router.post("/api/v1/jobs/{job_id}/cancel", responses=openapi.ok(JobObject, 404, 409))
async def cancel_job(job_id: str, services: ServicesDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_view(await services.jobs.service.cancel(job_id, tenant=_tenant(principal)))


@router.get(
    "/api/v1/jobs/{job_id}/stream",
    response_class=EventStream,
    responses={
        200: {
            "description": "Server-sent events: the job now, then at every change, ending "
            "after its last state; `id` is the job's sequence number (send it back as "
            "Last-Event-ID to resume); `: keep-alive` comments in between.",
            "content": openapi.stream(JobObject, last="the job's terminal state"),
        },
        **openapi.errors(404),
    },
)
async def stream_job(
    job_id: str,
    services: ServicesDep,
    principal: PrincipalDep,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> EventStream:
    service = services.jobs.service
    tenant = _tenant(principal)
    await service.get(job_id, tenant=tenant)  # a 404 now, not inside the stream
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    heartbeat = services.settings.stream_heartbeat_seconds

    async def events() -> Any:
        quiet_since = time.monotonic()
        async for row in service.watch(job_id, tenant=tenant, after_seq=after):
            if row is not None:
                data = orjson.dumps(job_view(row)).decode()
                yield f"id: {row.seq}\nevent: job\ndata: {data}\n\n"
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= heartbeat:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()

    return EventStream(events(), headers=SSE_HEADERS)
