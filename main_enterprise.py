"""Skygate's entry point: `create_app(settings)` builds the ASGI app.

`app = create_app()` is what gunicorn serves (`main_enterprise:app`);
`python main_enterprise.py` runs the embedded development server. Nothing here
opens a connection at import time: resources open in the lifespan.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.middleware import Middleware

from agents.jobs import RuntimeSlot
from agents.runtime import open_agents, with_agent_runs
from api import metrics as metrics_api
from api import probes, root, status
from api.openapi import install_openapi
from api.v1 import ROUTERS as V1_ROUTERS
from api.ws import router as ws_router
from core.config import OPEN_ACCESS_WARNING, Settings, load_settings
from core.container import Process, open_services
from core.http.access import AccessMiddleware
from core.http.body_limit import BodySizeLimitMiddleware
from core.http.context import (
    DrainMiddleware,
    ForwardedMiddleware,
    LogContextMiddleware,
    RequestIdMiddleware,
)
from core.http.cors import CORSMiddleware
from core.http.errors import install_exception_handlers
from core.http.forwarding import ForwardedPolicy
from core.http.last_resort import LastResortMiddleware
from core.http.tracing import TracingMiddleware
from core.infra.health import Lifecycle
from core.jobs.registry import job_catalog
from core.jobs.types import JobTypes
from core.observability import metrics
from core.observability.logging import configure_logging
from core.observability.sentry import init_sentry
from core.observability.tracing import Tracing

log = structlog.get_logger("skygate")


def edge_middleware(
    settings: Settings, lifecycle: Lifecycle, tracing: Tracing | None = None
) -> list[Middleware]:
    """The middleware stack, OUTERMOST FIRST (each wraps the ones below it); why this
    order is in `core.http.middleware`."""
    forwarded = ForwardedPolicy(settings.forwarded_allow_ips, hops=settings.forwarded_trusted_hops)
    traced = (
        [Middleware(TracingMiddleware, tracing=tracing)] if tracing and tracing.configured else []
    )
    return [
        *([Middleware(ForwardedMiddleware, policy=forwarded)] if forwarded.active else []),
        Middleware(RequestIdMiddleware),
        *traced,
        Middleware(LogContextMiddleware),
        Middleware(DrainMiddleware, lifecycle=lifecycle),
        Middleware(AccessMiddleware, enable_metrics=settings.enable_metrics),
        Middleware(LastResortMiddleware),
        Middleware(
            CORSMiddleware,
            origins=settings.cors_origins,
            origin_regex=settings.cors_origin_regex,
            on_reject=lambda origin: metrics.SECURITY_EVENTS.labels("cors_origin_rejected").inc(),
        ),
        Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_body_bytes),
    ]


def create_app(
    settings: Settings | None = None,
    *,
    process: Process | None = None,
    job_types: JobTypes | None = None,
) -> FastAPI:
    """The app. `process` says how it is run (default: one embedded process); a
    server that knows better sets `app.state.process` before the lifespan starts,
    as gunicorn's worker does (core.serving.worker). `job_types` replaces the
    built-in job types (core.jobs.registry), for tests."""
    settings = settings or load_settings()
    configure_logging(
        json_logs=settings.json_logs, level=settings.log_level, secrets=settings.secret_values()
    )
    init_sentry(settings)
    lifecycle = Lifecycle()
    tracing = Tracing(settings)  # its provider is built in the lifespan (each worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running: Process = app.state.process
        slot = RuntimeSlot()
        base = job_types if job_types is not None else job_catalog(settings)[0]
        types = with_agent_runs(base, slot)
        async with (
            open_services(settings, lifecycle, running, types, tracing) as services,
            open_agents(
                settings=settings,
                sessions=services.sessions,
                gateway=services,
                jobs=services.jobs.service,
                slot=slot,
                demo=services.demo,
                redis=services.redis,
            ) as agents,
        ):
            app.state.services = services
            app.state.agents = agents
            services.health.add_reporter("agents", agents.monitor.report)
            # Everything allocated so far lives as long as the process: keep it out of
            # the cyclic GC's generations so full collections stay short under load.
            gc.collect()
            gc.freeze()
            log.info(
                "skygate_started",
                environment=settings.environment,
                version=settings.version,
                process=running.kind,
                database=services.engine.dialect.name,
                redis=services.redis.state,
            )
            if not settings.auth_enabled and running.announces:
                log.warning("auth_disabled", detail=OPEN_ACCESS_WARNING)
            try:
                yield
            finally:
                lifecycle.draining = True
        log.info("skygate_stopped")

    app = FastAPI(
        title="Skygate",
        version=settings.version,
        lifespan=lifespan,
        docs_url=None if settings.is_production else "/docs",
        redoc_url=None,
        openapi_url=None if settings.is_production else "/openapi.json",
        middleware=edge_middleware(settings, lifecycle, tracing),
    )
    app.state.settings = settings
    app.state.lifecycle = lifecycle
    app.state.process = process or Process()
    install_exception_handlers(app)
    install_openapi(app)

    for router in V1_ROUTERS:
        app.include_router(router)
    app.include_router(ws_router)
    app.include_router(root.router)
    app.include_router(probes.router)
    app.include_router(status.router)
    if settings.enable_metrics:
        app.include_router(metrics_api.router)
    return app


def _run_embedded() -> None:
    """`python main_enterprise.py`: one uvicorn process on 127.0.0.1:$PORT, with the
    gunicorn workers' HTTP protocol (header and body limits, one write a response)
    and WebSocket protocol (message size, pings, no deflate, no query in the log)."""
    import uvicorn

    from core.serving.http_protocol import HttpLimits, SkygateHttpProtocol
    from core.serving.ws_protocol import WebSocketLimits

    settings = load_settings()
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=settings.port,
        http=SkygateHttpProtocol.with_limits(HttpLimits.from_settings(settings)),
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # core.http.forwarding applies X-Forwarded-For by hop count
        **WebSocketLimits.from_settings(settings).server_options(),
    )


def __getattr__(name: str) -> FastAPI:
    """`main_enterprise:app` is built on first access, so importing `create_app`
    (tests, tools) does not build an app from the environment."""
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)


if __name__ == "__main__":
    _run_embedded()
