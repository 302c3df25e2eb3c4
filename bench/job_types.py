"""JOB_TYPES_MODULE for the job benchmark (`bench.jobs`): a job that does nothing.

`bench.noop` returns the wall-clock time of its handler's first line, so the
benchmark measures enqueue-to-start up to the moment user code runs (the row's
`started_at` is written a step earlier, by the runner's counted start). The web
processes and the worker both load this module, as they load any deployment's
own types, so the API accepts what the worker can run.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from core.jobs.schedules import Schedule
from core.jobs.types import JobContext, JobType, JobTypes

NOOP = "bench.noop"
# Across all workers: as many as one worker runs at once (WORKER_CONCURRENCY's
# default), so the type's own limit is not what the drain measures.
NOOP_CONCURRENCY = 8


class Noop(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def noop(job: Noop, ctx: JobContext) -> Any:
    return {"started": time.time()}  # first: the handler's start is what is measured


def register(types: JobTypes, schedules: list[Schedule]) -> None:
    types.add(
        JobType(
            NOOP,
            Noop,
            noop,
            description="Does nothing (the job benchmark's latency probe).",
            concurrency=NOOP_CONCURRENCY,
        )
    )
