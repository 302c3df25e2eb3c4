"""The worker process: assembly, serving, and the drain.

SIGTERM or SIGINT: take no new job (pgqueuer's own shutdown), let the running
ones finish within WORKER_DRAIN_SECONDS, exit 0. pgqueuer's run is never
cancelled: it deletes a job cancelled mid-run. A job still running when the
drain time is up is left as it is (the process exits): it stays `in_progress`,
and the next worker re-picks it after the heartbeat timeout and resumes it from
its checkpoint.

The queue's connection does not reconnect (pgqueuer's drivers do not), so the
serving loop restarts it after a failure (PostgreSQL restarted, a network
blip) until the process is told to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable

import structlog

from agents.jobs import RuntimeSlot
from agents.runtime import open_agents, with_agent_runs
from core.config import ConfigurationError, Settings, load_settings
from core.container import Process, open_gateway, open_infrastructure, open_jobs
from core.jobs.heartbeat import Heartbeat, default_worker_name
from core.jobs.registry import job_catalog
from core.jobs.schedules import run_schedules
from core.observability.logging import configure_logging
from core.observability.sentry import init_sentry
from database.engine import asyncpg_dsn
from worker.watchdog import Watchdog

log = structlog.get_logger("skygate.worker")

RESTART_SECONDS = 2.0  # after the queue's connection failed
SQLITE_REFUSAL = (
    "python -m worker needs PostgreSQL (DATABASE_URL): on SQLite, the embedded "
    "default, jobs run inside the web process and there is no queue to share."
)


async def _supervised(name: str, serve: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run `serve` until it returns with `stop` set; restart it after a failure."""
    while True:
        try:
            await serve()
        except Exception as exc:
            log.error("worker_part_failed", part=name, error=type(exc).__name__, detail=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_SECONDS)
            if stop.is_set():
                return
            continue
        if stop.is_set():
            return


async def serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    process = Process(kind="worker")
    catalog, schedules = job_catalog(settings)
    slot = RuntimeSlot()
    types = with_agent_runs(catalog, slot)
    name = settings.worker_name or default_worker_name()
    async with (
        open_infrastructure(settings) as infra,
        open_gateway(infra, process) as gateway,
        open_jobs(infra, gateway, process, types) as jobs,
        open_agents(
            settings=settings,
            sessions=infra.sessions,
            gateway=gateway,
            jobs=jobs.service,
            slot=slot,
            demo=gateway.demo,
            redis=infra.redis,
        ),
    ):
        runner, queue = jobs.runner, jobs.queue
        watchdog = Watchdog(runner.running)
        watchdog.start()
        beats_stop = asyncio.Event()
        heartbeat = Heartbeat(
            name=name,
            redis=infra.redis,
            repository=runner.repository,
            interval=settings.worker_heartbeat_seconds,
            version=settings.version,
            running=lambda: list(runner.running),
        )
        beating = asyncio.create_task(heartbeat.run(beats_stop), name="heartbeat")
        dsn = asyncpg_dsn(settings.database_url)
        work = [
            asyncio.create_task(
                _supervised("queue", lambda: queue.serve(runner, types, stop=stop), stop),
                name="queue",
            ),
            asyncio.create_task(
                _supervised(
                    "schedules",
                    lambda: run_schedules(dsn, schedules, jobs.service, stop=stop),
                    stop,
                ),
                name="schedules",
            ),
        ]
        log.info(
            "worker_started",
            worker=name,
            types=sorted(t.name for t in types),
            schedules=[f"{s.type} {s.cron}" for s in schedules],
        )
        await stop.wait()
        log.info("worker_draining", worker=name, running=list(runner.running))
        _done, pending = await asyncio.wait(work, timeout=settings.worker_drain_seconds)
        if pending:
            # Never cancel pgqueuer's run (it would delete the running jobs): leave
            # them in progress for the next worker, and go.
            log.warning("worker_drain_timeout", worker=name, left=list(runner.running))
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        watchdog.stop()
        beats_stop.set()
        await beating
    log.info("worker_stopped", worker=name)
    return 0


def main() -> int:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(
        json_logs=settings.json_logs, level=settings.log_level, secrets=settings.secret_values()
    )
    if settings.is_sqlite:
        log.error("worker_refused", reason=SQLITE_REFUSAL)
        print(SQLITE_REFUSAL, file=sys.stderr)
        return 2
    init_sentry(settings)
    if settings.worker_metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr=settings.host)
    return asyncio.run(serve(settings))
