"""JOB_TYPES_MODULE for the worker tests: job types that leave a trace every
process can read (a log file named in the job's input), so a test can count how
often each step ran across worker processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.jobs.schedules import Schedule
from core.jobs.types import JobContext, JobType, JobTypes

TICK_ENV = "SKYGATE_TEST_TICK_CRON"  # set: a schedule of test.tick on this cron


class Steps(BaseModel):
    log: str  # a file each step appends to: "<label> <step> start|done <pid>"
    label: str
    steps: int = 1
    step_seconds: float = 0.0


def _trace(path: str, line: str) -> None:
    with Path(path).open("a") as out:
        out.write(f"{line} {os.getpid()}\n")


async def steps(job: Steps, ctx: JobContext) -> Any:
    first = (ctx.resume or {}).get("next", 0)  # resumes after the last checkpoint
    for step in range(first, job.steps):
        _trace(job.log, f"{job.label} {step} start")
        await asyncio.sleep(job.step_seconds)
        _trace(job.log, f"{job.label} {step} done")
        await ctx.progress(
            current_step=step + 1,
            total_steps=job.steps,
            step="steps",
            checkpoint={"next": step + 1},
        )
    return {"label": job.label, "attempt": ctx.attempt}


class Tick(BaseModel):
    pass


async def tick(job: Tick, ctx: JobContext) -> Any:
    return {"tick": True}


def register(types: JobTypes, schedules: list[Schedule]) -> None:
    types.add(JobType("test.steps", Steps, steps, concurrency=8))
    types.add(JobType("test.tick", Tick, tick, public=False))
    cron = os.environ.get(TICK_ENV)
    if cron:
        schedules.append(Schedule("test.tick", cron))
