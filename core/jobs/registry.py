"""The job types this build can run, and what their handlers may use.

`JOB_TYPES_MODULE` names a module whose `register(types, schedules)` adds job
types and schedules of its own. The web processes and the worker load it alike,
so what one accepts the other can run; the worker tests use it to run their own
types in real `python -m worker` processes (kept as a documented hook rather
than a test-only variable: a deployment's own job types are the same need).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from core.config import Settings
from core.jobs.chat_batch import CHAT_BATCH
from core.jobs.maintenance import maintenance_types
from core.jobs.schedules import SCHEDULES, Schedule
from core.jobs.types import JobTypes
from database.repositories.jobs import JobRepository


@dataclass(frozen=True, slots=True)
class JobResources:
    """`JobContext.services`: the settings, the gateway layer (models are called
    through it exactly as the API calls them) and the repositories."""

    settings: Settings
    gateway: Any  # core.container.Gateway (typed loosely: the container imports us)
    jobs: JobRepository


def builtin_job_types() -> JobTypes:
    types = JobTypes()
    types.add(CHAT_BATCH)
    for job_type in maintenance_types():
        types.add(job_type)
    return types


def job_catalog(settings: Settings) -> tuple[JobTypes, list[Schedule]]:
    """The built-in types and schedules, plus JOB_TYPES_MODULE's."""
    types, schedules = builtin_job_types(), list(SCHEDULES)
    if settings.job_types_module:
        module = importlib.import_module(settings.job_types_module)
        module.register(types, schedules)
    return types, schedules
