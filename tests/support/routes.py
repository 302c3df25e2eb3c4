"""Routes a test adds to an app to reach each kind of failure: a validated body,
an unhandled exception carrying a secret, and a `GatewayError` with headers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from core.errors import RateLimitError

LEAKY = "internal detail: password=hunter2 at /srv/skygate/core.py line 42"


class Echo(BaseModel):
    text: str
    n: int = Field(default=1, ge=1, le=8)


def add_test_routes(app: FastAPI) -> None:
    @app.post("/test/echo")
    async def echo(body: Echo) -> dict[str, Any]:
        return {"text": body.text, "n": body.n}

    @app.get("/test/boom")
    async def boom() -> None:
        raise RuntimeError(LEAKY)

    @app.get("/test/limited")
    async def limited() -> None:
        raise RateLimitError("Slow down.", headers={"Retry-After": "7"})
