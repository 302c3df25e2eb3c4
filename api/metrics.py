"""`GET /metrics`: Prometheus exposition, summed over every gunicorn worker.

A plain `def`: reading the multiprocess files is blocking I/O, so FastAPI runs
it in the thread pool instead of on the event loop.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from core.metrics import render_latest

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics() -> Response:
    body, content_type = render_latest()
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
