"""Every Prometheus metric Skygate exports, defined once, and their exposition.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set by `gunicorn.conf.py` before
this module is imported, so every value lives in the shared multiprocess
directory and a scrape of any worker returns the sum over all workers (dead
workers' counters included, so a counter never goes down when a worker is
recycled). Labels are bounded: route *templates*, methods, status codes and
small fixed enums — never a raw path, a key or a user. Two labels name things an
operator configures rather than a fixed enum: `model_group`/`deployment` (the
router config) and `tenant` (the tenants of the API keys an admin creates), the
latter capped per process at `TENANT_LABELS` values (`tenant_label`).

`error_type` (on `http_requests_total` and `llm_requests_total`) is the fault of
the error answered, one of `core.errors.FAULTS` (`caller_*`, `policy_*`,
`provider_*`, `gateway_*`), and empty for a success: Prometheus stores an empty
label as no label, so a success series is exactly what it was before the label
existed, `{error_type!=""}` selects failures and `{error_type=~"gateway_.*"}`
Skygate's own (OpenTelemetry's `error.type` is likewise absent on success).
A sentinel such as "none" would instead show up as one more fault in every
`sum by (error_type)`.

The exposition (scrapes, the per-process collector, counter readings) is
`core.observability.exposition`. The alert rules and the dashboard built on
these live in `deploy/`
(`tests/deploy` checks that every metric they use is exported).
"""

from __future__ import annotations

import os
from typing import Any, Generic, TypeVar

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    values,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
M = TypeVar("M")

# Multiprocess values check the pid on every update, to notice a fork; that is a
# getpid() system call each time (~15 a request). The pid is cached instead and
# refreshed in every forked child.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)
if os.environ.get(MULTIPROC_ENV):
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _pid)  # type: ignore[no-untyped-call]


class Cached(Generic[M]):
    """A labelled metric whose children are kept in a dict: prometheus_client's
    `labels()` validates and takes a lock on every call (~0.7 us, about ten times
    a request). Label values are bounded here (see above), so the dict is too."""

    __slots__ = ("metric", "_children")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)  # type: ignore[attr-defined]
        return child

    def __getattr__(self, name: str) -> Any:
        return getattr(self.metric, name)


MASTER_PID_ENV = "SKYGATE_MASTER_PID"
UNMATCHED_ROUTE = "<unmatched>"

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)

# -- HTTP -------------------------------------------------------------------
HTTP_REQUESTS = Cached(
    Counter(
        "http_requests_total",
        "HTTP requests served, by the fault of the error answered (error_type, empty "
        "for a success; core.errors.FAULTS).",
        ["method", "route", "status", "error_type"],
    )
)
HTTP_DURATION = Cached(
    Histogram(
        "http_request_duration_seconds",
        "Time from request start to the end of the response.",
        ["method", "route"],
        buckets=LATENCY_BUCKETS,
    )
)
HTTP_IN_PROGRESS = Cached(
    Gauge(
        "http_requests_in_progress",
        "HTTP requests being served now.",
        ["method"],
        multiprocess_mode="livesum",
    )
)
WEBSOCKET_ACTIVE = Gauge(
    "websocket_connections_active",
    "Accepted WebSocket connections open now.",
    multiprocess_mode="livesum",
)
WEBSOCKET_SESSIONS = Cached(
    Counter(
        "websocket_sessions_total",
        "WebSocket sessions ended, by route template and outcome "
        "(normal, error, rejected, other; see core/http/access.py).",
        ["route", "outcome"],
    )
)
WEBSOCKET_DURATION = Cached(
    Histogram(
        "websocket_session_duration_seconds",
        "Time from a WebSocket's handshake to its close.",
        ["route"],
        buckets=(*LATENCY_BUCKETS, 300.0, 900.0, 3600.0),
    )
)
WEBSOCKET_MESSAGES = Cached(
    Counter(
        "websocket_messages_total",
        "Agent WebSocket protocol messages, by direction (in, out) and message type "
        "(a bounded set: the protocol's types, `other` for anything else).",
        ["direction", "type"],
    )
)
WEBSOCKET_SENDER_LAG = Histogram(
    "websocket_sender_lag_seconds",
    "Time an outgoing WebSocket message waited in its connection's queue.",
    buckets=LATENCY_BUCKETS,
)
WEBSOCKET_CLOSES = Cached(
    Counter(
        "websocket_closes_total",
        "Agent WebSocket sessions closed by the server, by close code.",
        ["code"],
    )
)
WORKER_CONNECTIONS = Gauge(
    "skygate_worker_connections",
    "Client connections this worker holds open (one series per worker pid; "
    "core/serving/balance.py keeps them even).",
    multiprocess_mode="liveall",
)

# -- security ---------------------------------------------------------------
SECURITY_EVENTS = Counter(
    "security_events_total",
    "Security-relevant events (rejected auth, limits, origins, oversized bodies).",
    ["type"],
)

# -- dependencies -----------------------------------------------------------
REDIS_STATE = Gauge(
    "redis_available",
    "1 when every live worker's Redis circuit is closed (Redis usable), else 0.",
    multiprocess_mode="livemin",
)
REDIS_STATE_CHANGES = Counter(
    "redis_state_changes_total", "Redis circuit breaker transitions.", ["to"]
)
# `redis_available` is 0 where Redis is not configured at all (a gauge's default):
# this says whether a 0 is an outage or the embedded setup.
REDIS_CONFIGURED = Gauge(
    "redis_configured",
    "1 when REDIS_URL is set (so redis_available 0 means degraded, not absent).",
    multiprocess_mode="livemax",
)
# Labelled by backend (postgresql, sqlite) so that a process that never checks (the
# job worker, which imports these definitions too) exports nothing instead of a 0.
DATABASE_STATE = Cached(
    Gauge(
        "database_available",
        "1 when the database answered the last health check (whichever worker ran it "
        "last; every /metrics scrape runs one, cached for a second), else 0.",
        ["backend"],
        multiprocess_mode="livemostrecent",
    )
)


# -- LLM traffic (labels: provider kind, public model group, bounded enums) ----
API_DURATION = Cached(
    Histogram(
        "api_request_duration_seconds",
        "Duration of /api/v1 requests, by route template.",
        ["method", "route"],
        buckets=LATENCY_BUCKETS,
    )
)
LLM_REQUESTS = Cached(
    Counter(
        "llm_requests_total",
        "LLM requests by final outcome, and the fault of the error answered "
        "(error_type, empty for a success; core.errors.FAULTS).",
        ["provider", "model_group", "outcome", "error_type"],
    )
)
LLM_DURATION = Cached(
    Histogram(
        "llm_request_duration_seconds",
        "Time from request start to the last byte of the answer.",
        ["provider", "model_group"],
        buckets=LATENCY_BUCKETS,
    )
)
# OpenTelemetry's advisory buckets for gen_ai.server.time_to_first_token, and 15 s,
# 30 s and 60 s past them for reasoning models that think before their first token.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
)  # fmt: skip
# OpenTelemetry's for gen_ai.server.time_per_output_token (10 ms to 2.5 s), with 1,
# 2.5 and 5 ms below them: hosted models stream 200 to 1000 tokens a second.
TPOT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.75, 1.0, 2.5,
)  # fmt: skip
LLM_TTFT = Cached(
    Histogram(
        "llm_time_to_first_token_seconds",
        "Streaming: time from request start to the first chunk sent to the client "
        "(retries and fallbacks before it included), by the provider that answered "
        "and the model group asked for.",
        ["provider", "model_group"],
        buckets=TTFT_BUCKETS,
    )
)
LLM_TPOT = Cached(
    Histogram(
        "llm_time_per_output_token_seconds",
        "Streaming, completed streams: seconds per output token after the first "
        "(last chunk - first chunk) / (completion tokens - 1), as OpenTelemetry's "
        "gen_ai.server.time_per_output_token.",
        ["provider", "model_group"],
        buckets=TPOT_BUCKETS,
    )
)
LLM_TOKENS = Cached(
    Counter(
        "llm_tokens_total",
        "Tokens processed, by tenant (tenant_label) and kind (prompt, completion).",
        ["provider", "model_group", "tenant", "kind"],
    )
)
LLM_COST = Cached(
    Counter(
        "llm_cost_usd_total",
        "Cost in US dollars, by tenant (tenant_label).",
        ["provider", "model_group", "tenant"],
    )
)
GATEWAY_OVERHEAD = Cached(
    Histogram(
        "gateway_overhead_seconds",
        "Time spent in Skygate itself for an LLM request (total minus upstream time).",
        ["kind"],
        buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    )
)
LLM_RETRIES = Counter("llm_retries_total", "Retries within a model group.", ["model_group"])
LLM_FALLBACKS = Counter(
    "llm_fallbacks_total", "Fallbacks from one model group to another.", ["from_group", "to_group"]
)
LLM_UPSTREAM_ERRORS = Counter(
    "llm_upstream_errors_total",
    "Failed upstream attempts by failure kind.",
    ["provider", "model_group", "kind"],
)
LLM_DEPLOYMENT_COOLDOWN = Gauge(
    "llm_deployment_cooldown",
    "1 while a deployment's circuit is open (cooling down) in any live worker.",
    ["model_group", "deployment"],
    multiprocess_mode="livemax",
)

# -- response cache -----------------------------------------------------------
CACHE_HITS = Cached(Counter("redis_cache_hits_total", "Response cache hits.", ["backend"]))
CACHE_MISSES = Cached(Counter("redis_cache_misses_total", "Response cache misses.", ["backend"]))
CACHE_HIT_RATE = Gauge(
    "redis_cache_hit_rate",
    "Hit rate of the response cache since this worker started.",
    multiprocess_mode="liveall",
)
USAGE_DROPPED = Counter(
    "usage_records_dropped_total", "Usage records dropped because the writer fell behind."
)
USAGE_WRITTEN = Counter("usage_records_written_total", "Usage records written to the database.")

# -- limits -------------------------------------------------------------------
RATE_LIMIT_LIMITS = (
    "requests_per_minute",
    "requests_per_hour",
    "tokens_per_minute",
    "monthly_budget",
    "auth_failures",
)
RATE_LIMITED = Cached(
    Counter(
        "rate_limit_refusals_total",
        "Requests refused with 429 by Skygate's own limits, by limit "
        f"({', '.join(RATE_LIMIT_LIMITS)}); a provider's 429s are counted in "
        "llm_requests_total as error_type provider_rate_limited.",
        ["limit"],
    )
)
TENANT_BUDGET_USED = Cached(
    Gauge(
        "tenant_budget_used_ratio",
        "Month-to-date spend / monthly budget of the tenant's most spent budgeted key, "
        "as last checked (at each of its requests); 1 means its requests are refused.",
        ["tenant"],
        multiprocess_mode="livemax",
    )
)


# -- background jobs ----------------------------------------------------------
# Outcomes and durations are counted where a job runs: `python -m worker` (served
# on WORKER_METRICS_PORT) or the web process in-process. Queue depth and
# heartbeats are what the web's worker monitor last read (core.jobs.heartbeat),
# refreshed every WORKER_HEARTBEAT_SECONDS; every web worker reads the same
# numbers, so the multiprocess view takes the max over live workers, not a sum.
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
JOB_OUTCOMES = ("success", "failed", "cancelled", "retry", "worker_lost", "time_limit")
JOBS_FINISHED = Cached(
    Counter(
        "jobs_finished_total",
        f"Job runs ended, by type and outcome ({', '.join(JOB_OUTCOMES)}).",
        ["type", "outcome"],
    )
)
JOB_DURATION = Cached(
    Histogram(
        "job_duration_seconds", "Time a job's run took, by type.", ["type"], buckets=JOB_BUCKETS
    )
)
JOB_QUEUE_WAIT = Cached(
    Histogram(
        "job_queue_wait_seconds",
        "Time from submission to a job's first start, by type.",
        ["type"],
        buckets=JOB_BUCKETS,
    )
)
JOBS_QUEUE_DEPTH = Cached(
    Gauge(
        "jobs_queue_depth",
        "Jobs queued or in progress (all tenants), as last read from the database.",
        ["status"],
        multiprocess_mode="livemax",
    )
)
WORKER_LAST_BEAT = Cached(
    Gauge(
        "worker_last_heartbeat_timestamp_seconds",
        "Unix time of each job worker's last heartbeat (age = time() - this).",
        ["worker"],
        multiprocess_mode="livemax",
    )
)
WORKER_BEAT_AGE = Cached(
    Gauge(
        "worker_heartbeat_age_seconds",
        "Seconds since each job worker's last heartbeat, when the web last looked.",
        ["worker"],
        multiprocess_mode="livemin",
    )
)
# Labelled, so that it is absent (not 0) where jobs run in the web process and no
# monitor looks for workers: an alert on `fresh == 0` then has nothing to fire on.
WORKERS_SEEN = Cached(
    Gauge(
        "jobs_workers",
        "Job workers the web last saw, by state: fresh (beat within 3 heartbeats) or "
        "stale (beat within the last hour, silent since).",
        ["state"],
        multiprocess_mode="livemax",
    )
)
JOBS_OLDEST_QUEUED = Gauge(
    "jobs_oldest_queued_age_seconds",
    "Age of the oldest job still queued (0: none), as last read from the database.",
    multiprocess_mode="livemax",
)

# -- tenants as a label ----------------------------------------------------------
# Tenants are the operator's (each API key's tenant is set by an admin), so their
# number is the deployment's own; the cap is a guard against a runaway key script.
# Past it a process counts new tenants as "other" (usage records in the database
# keep every tenant exactly).
TENANT_LABELS = 500
OTHER_TENANT = "other"
_tenants: set[str] = set()


def tenant_label(tenant: str) -> str:
    if tenant in _tenants:
        return tenant
    if len(_tenants) < TENANT_LABELS:
        _tenants.add(tenant)
        return tenant
    return OTHER_TENANT
