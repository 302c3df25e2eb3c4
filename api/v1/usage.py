"""`GET /api/v1/usage`: requests, tokens and cost by day, model and tenant."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api import bodies, openapi
from api.deps import PrincipalDep
from core.container import ServicesDep
from core.errors import BadRequestError

router = APIRouter(tags=["usage"])
MAX_DAYS = 366


@router.get("/api/v1/usage", responses=openapi.ok(bodies.UsageReport))
async def usage(
    services: ServicesDep,
    principal: PrincipalDep,
    start: Annotated[date | None, Query(description="first day (UTC), default 30 days ago")] = None,
    end: Annotated[date | None, Query(description="last day (UTC), default today")] = None,
) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    end = end or today
    start = start or end - timedelta(days=29)
    if start > end or (end - start).days >= MAX_DAYS:
        raise BadRequestError(
            f"start must not be after end, and at most {MAX_DAYS} days apart.", param="start"
        )
    rows = await services.usage.summary(
        tenant=None if principal.admin else principal.tenant, since=start, until=end
    )
    totals = {
        "requests": sum(r["requests"] for r in rows),
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "cost_usd": round(sum(r["cost_usd"] for r in rows), 9),
    }
    return {"object": "usage", "start": str(start), "end": str(end), "data": rows, "totals": totals}
