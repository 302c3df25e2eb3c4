"""Job types for tests of the job machinery (real types, run by the real runner
and queue), and a client-side wait that uses the API's own event stream."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from pydantic import BaseModel

from core.jobs.types import JobContext, JobType, JobTypes, RetryableJobError

TERMINAL = frozenset({"success", "failed", "cancelled"})
GATES: dict[str, asyncio.Event] = {}  # test.gate jobs hold until their gate opens
STARTED: dict[str, asyncio.Event] = {}  # ... and say here that they are running


class Echo(BaseModel):
    text: str
    steps: int = 3


async def echo(job: Echo, ctx: JobContext) -> Any:
    for step in range(job.steps):
        await ctx.progress(current_step=step + 1, total_steps=job.steps, step="echo")
    return {"echo": job.text, "attempt": ctx.attempt}


class Gate(BaseModel):
    name: str


async def gate(job: Gate, ctx: JobContext) -> Any:
    opened = GATES.setdefault(job.name, asyncio.Event())
    await ctx.progress(current_step=0, total_steps=1, step="waiting")
    STARTED.setdefault(job.name, asyncio.Event()).set()
    while not opened.is_set():
        await ctx.checkpoint()  # where a cancel takes effect
        try:
            await asyncio.wait_for(opened.wait(), 0.05)
        except TimeoutError:
            pass
    return {"gate": job.name}


class Flaky(BaseModel):
    failures: int


async def flaky(job: Flaky, ctx: JobContext) -> Any:
    if ctx.attempt <= job.failures:
        raise RetryableJobError(f"transient failure {ctx.attempt}")
    return {"attempts": ctx.attempt}


class Stuck(BaseModel):
    seconds: float = 30


async def stuck(job: Stuck, ctx: JobContext) -> Any:
    await asyncio.sleep(job.seconds)
    return None


def job_types_for_tests() -> JobTypes:
    types = JobTypes()
    types.add(JobType("test.echo", Echo, echo))
    types.add(JobType("test.gate", Gate, gate, concurrency=1))
    types.add(JobType("test.flaky", Flaky, flaky, max_attempts=3, retry_base_seconds=0.05))
    types.add(JobType("test.stuck", Stuck, stuck, soft_limit_seconds=0.3))
    return types


async def job_events(
    client: httpx.AsyncClient, job_id: str, *, headers: dict[str, str] | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """Every event of the job's stream until it ends: (event id, job)."""
    events: list[tuple[int, dict[str, Any]]] = []
    async with client.stream(
        "GET", f"/api/v1/jobs/{job_id}/stream", headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        event_id, data = None, None
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data = orjson.loads(line[6:])
            elif line == "" and data is not None:
                assert event_id is not None
                events.append((event_id, data))
                event_id, data = None, None
    return events


async def finished(
    client: httpx.AsyncClient, job_id: str, *, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The job once it has ended, waited for through its event stream."""
    events = await job_events(client, job_id, headers=headers)
    assert events and events[-1][1]["status"] in TERMINAL, events
    return events[-1][1]
