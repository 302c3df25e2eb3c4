"""Every Prometheus metric Skygate exports, defined once, and their exposition.

Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` is set by `gunicorn.conf.py` before
this module is imported, so every value lives in the shared multiprocess
directory and a scrape of any worker returns the sum over all workers (dead
workers' counters included, so a counter never goes down when a worker is
recycled). Labels are bounded: route *templates*, methods, status codes and
small fixed enums — never a raw path, a key or a user.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
    Counter("http_requests_total", "HTTP requests served.", ["method", "route", "status"])
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
        "LLM requests by final outcome.",
        ["provider", "model_group", "outcome"],
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
LLM_TTFT = Cached(
    Histogram(
        "llm_time_to_first_token_seconds",
        "Streaming: time from request start to the first chunk sent to the client.",
        ["provider", "model_group"],
        buckets=LATENCY_BUCKETS,
    )
)
LLM_TOKENS = Cached(
    Counter("llm_tokens_total", "Tokens processed.", ["provider", "model_group", "kind"])
)
LLM_COST = Cached(Counter("llm_cost_usd_total", "Cost in US dollars.", ["provider", "model_group"]))
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
    "1 while a deployment's circuit is open (cooling down) in this worker.",
    ["deployment"],
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


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _read_stat(pid: int) -> tuple[float, float, float, int] | None:
    """(cpu seconds, rss bytes, start time since boot in s, open fds) of a live pid."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (float(parts[11]) + float(parts[12])) / ticks
    rss = float(parts[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss, float(parts[19]) / ticks, fds


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


class GunicornProcessCollector(Collector):
    """Process metrics for the gunicorn master and each live worker, by pid.

    prometheus-client's ProcessCollector reports only the process that happens to
    answer the scrape; summing per-process CPU counters across recycled workers
    would go backwards. One series per live process (labels `pid`, `role`) keeps
    every counter monotonic and shows each worker's memory.
    """

    def __init__(self, master_pid: int) -> None:
        self.master_pid = master_pid
        try:
            self.boot = _boot_time()
        except OSError:
            self.boot = 0.0

    def _pids(self) -> list[tuple[int, str]]:
        pids = [(self.master_pid, "master")]
        try:
            children = (
                Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children").read_text().split()
            )
        except OSError:
            children = []
        pids.extend((int(c), "worker") for c in children)
        return pids

    def collect(self) -> Iterable[Metric]:
        labels = ["pid", "role"]
        cpu = CounterMetricFamily(
            "process_cpu_seconds_total", "Total user and system CPU time.", labels=labels
        )
        rss = GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size.", labels=labels
        )
        start = GaugeMetricFamily(
            "process_start_time_seconds", "Process start time (unix epoch).", labels=labels
        )
        fds = GaugeMetricFamily("process_open_fds", "Open file descriptors.", labels=labels)
        for pid, role in self._pids():
            stat = _read_stat(pid)
            if stat is None:
                continue
            values = [str(pid), role]
            cpu.add_metric(values, stat[0])
            rss.add_metric(values, stat[1])
            start.add_metric(values, self.boot + stat[2])
            fds.add_metric(values, stat[3])
        return [cpu, rss, start, fds]


def render_latest() -> tuple[bytes, str]:
    """The exposition body and content type for a scrape of this process."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    master = os.environ.get(MASTER_PID_ENV)
    registry.register(GunicornProcessCollector(int(master) if master else os.getpid()))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def counter_totals(*names: str) -> dict[str, float]:
    """Sum of each counter over every label set and every worker (for JSON views)."""
    path = multiprocess_dir()
    if path is None:
        registry: CollectorRegistry = REGISTRY
    else:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    totals = dict.fromkeys(names, 0.0)
    for family in registry.collect():
        if family.name in totals:
            totals[family.name] += sum(
                s.value for s in family.samples if s.name == family.name + "_total"
            )
    return totals
