"""`agent.run`: a background run, executed by whichever worker takes the job.

The job carries only the run's id; the run's row holds everything else (the
definition it runs with, its input and limits). The key that asked for it is re-read
as the edge re-reads keys (`KeyCredentials`), so a key revoked meanwhile stops the
run with `key_revoked`. A run is not resumed after a crash: its tool calls may have
had effects, so a redelivered job finds the run `in_progress`, fails it with
`worker_lost` and says so, rather than calling the tools again.

The job type is registered by the processes that have an agent runtime (the web app
and `python -m worker`); its handler waits for that runtime to be open, since the
in-process queue can deliver before the agents layer has started.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from agents.run_views import FINISHED, run_object
from agents.runs import RunService
from agents.state import Stop
from core.auth.authenticator import Principal
from core.jobs.chat_batch import KeyCredentials
from core.jobs.types import JobContext, JobFailed, JobType, RetryableJobError
from database.repositories.keys import KeyRepository

NAME = "agent.run"


class AgentRunJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str


class RuntimeSlot:
    """Where the job handler finds the process's run service once it is open."""

    def __init__(self) -> None:
        self.service: RunService | None = None
        self.ready = asyncio.Event()

    def set(self, service: RunService | None) -> None:
        self.service = service
        if service is None:
            self.ready.clear()
        else:
            self.ready.set()


def agent_run_type(slot: RuntimeSlot) -> JobType[AgentRunJob]:
    async def handle(job: AgentRunJob, ctx: JobContext) -> Any:
        await slot.ready.wait()
        service = slot.service
        assert service is not None
        row = await service.runs.get(job.run_id)
        if row is None or row.status in FINISHED:
            return {"run_id": job.run_id, "status": row.status if row else "missing"}
        if row.status != "queued":  # it started before, on a worker that was lost
            now = datetime.now(UTC)
            error = {"code": "worker_lost", "message": "The worker running this run was lost."}
            await service.runs.update(
                row.id,
                unless=FINISHED,
                status="failed",
                stop_reason="error",
                error=error,
                finished_at=now,
            )
            raise JobFailed(error["message"], code="worker_lost")
        credentials = KeyCredentials(
            KeyRepository(service.runs.sessions),
            key_id=row.api_key_id,
            tenant=row.tenant,
            max_age=ctx.services.settings.auth_cache_seconds,
            what="run",
        )

        async def principal() -> Principal:
            try:
                return await credentials.principal()
            except JobFailed as failed:
                raise Stop("error", str(failed), code=failed.code) from None
            except RetryableJobError as away:
                raise Stop("error", str(away), code="key_unreadable") from None

        finished = await service.execute(row, principal)
        return {
            "run_id": finished.id,
            "status": finished.status,
            "stop_reason": finished.stop_reason,
            "run": run_object(finished),
        }

    return JobType(
        NAME,
        AgentRunJob,
        handle,
        description="An agent run started with background: true.",
        soft_limit_seconds=3600 + 60,  # max_wall_seconds is at most 3600
        hard_limit_seconds=3600 + 300,
        max_attempts=2,  # the second start only marks a lost run failed
        public=False,
    )
