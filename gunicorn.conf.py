"""gunicorn settings for Skygate: `gunicorn -c gunicorn.conf.py main_enterprise:app`.

- uvicorn workers (`core.serving.worker.SkygateWorker`), `WEB_CONCURRENCY` of them (2);
- bind $HOST:$PORT (0.0.0.0 by default; Render sets PORT); beyond loopback it
  refuses to start in development without ADMIN_API_KEY (auth would be off);
- timeout 120 s, graceful timeout `GRACEFUL_TIMEOUT` (30 s) covering the
  readiness drain (`SHUTDOWN_DRAIN_SECONDS`) plus in-flight requests;
- workers recycled after `MAX_REQUESTS` (50000) + up to `MAX_REQUESTS_JITTER` requests;
- connections spread evenly over the workers (core/serving/balance.py), through a
  board in shared memory each worker gets a slot on before it forks;
- Prometheus multiprocess mode: the directory is created and emptied when the
  master starts and each dead worker's live gauges are dropped;
- logs through structlog, like the app's;
- the configuration is validated in the master, so an unsafe production setup
  stops before any worker forks, with a message naming the variable;
- before the first fork the master imports the app's modules and, when a deployment
  needs it, litellm with what its first call builds (`when_ready`), then freezes
  them out of the cyclic GC: the workers share those pages instead of each loading
  its own copy (docs/PERFORMANCE.md, "Memory"). As with gunicorn's `--preload`, a
  code change needs a restart, not a HUP; under `--reload` nothing is preloaded.

Metric values must be created in the workers, after PROMETHEUS_MULTIPROC_DIR is
set: this file imports no metric definitions at its top, and the values the
preload's imports create are written to a scratch directory, deleted after (a
forked worker starts its own; the master's would count as one more live process).
"""

from __future__ import annotations

import gc
import importlib
import ipaddress
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from core.config import OPEN_ACCESS_WARNING, ConfigurationError, Settings, load_settings
from core.observability.logging import configure_logging, logging_dict

# Validate first: a bad environment must stop the master, not each worker.
from core.serving import balance

_settings = load_settings()  # raises ConfigurationError (exit 1, message on stderr)
if _settings.router_config:
    from core.llm.config import RouterConfigError, load_router_config

    try:
        load_router_config(_settings.router_config)
    except RouterConfigError as _error:
        raise ConfigurationError(f"ROUTER_CONFIG is invalid:\n{_error}") from None


def _loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name or 0.0.0.0-style wildcard: reachable from elsewhere
        return False


def _bind(settings: Settings) -> str:
    """HOST:PORT, refused beyond loopback while auth is off (development without
    ADMIN_API_KEY): the LLM routes would be open to the network."""
    host = settings.host.strip()
    if not settings.auth_enabled and not _loopback(host):
        raise ConfigurationError(
            "Skygate configuration is invalid:\n"
            f"  ADMIN_API_KEY: must be set to serve on HOST={host} (beyond loopback); "
            "without it authentication is off and the LLM routes are open to anyone "
            "who can connect. Set ADMIN_API_KEY, or HOST=127.0.0.1 for a local server."
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    return f"{host}:{settings.port}"


bind = _bind(_settings)
workers = _settings.web_concurrency
worker_class = "core.serving.worker.SkygateWorker"
timeout = 120
graceful_timeout = _settings.graceful_timeout
keepalive = 75  # above common load balancer idle timeouts (Render's is 60 s)
max_requests = _settings.max_requests
max_requests_jitter = _settings.max_requests_jitter
# FORWARDED_ALLOW_IPS / FORWARDED_TRUSTED_HOPS are applied by core.http.forwarding in the
# app (uvicorn's proxy-header middleware is off: under `*` it trusts the leftmost,
# client-written X-Forwarded-For entry).
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None
accesslog = None
logconfig_dict = logging_dict(json_logs=_settings.json_logs, level=_settings.log_level)

# Prometheus multiprocess mode: must be in the environment before any worker
# imports prometheus_client.
if _settings.enable_metrics:
    os.environ.setdefault(
        "PROMETHEUS_MULTIPROC_DIR",
        str(Path(tempfile.gettempdir()) / f"skygate-metrics-{_settings.port}"),
    )


def on_starting(server: Any) -> None:
    """Master start: fresh metrics directory, structlog everywhere."""
    configure_logging(
        json_logs=_settings.json_logs, level=_settings.log_level, secrets=_settings.secret_values()
    )
    if not _settings.auth_enabled:  # here once, not per worker (create_app skips it under gunicorn)
        structlog.get_logger("skygate.auth").warning("auth_disabled", detail=OPEN_ACCESS_WARNING)
    os.environ["SKYGATE_MASTER_PID"] = str(os.getpid())
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        shutil.rmtree(path, ignore_errors=True)
        Path(path).mkdir(parents=True, exist_ok=True)


# Workers spread connections evenly between them through a board in shared
# memory (core/serving/balance.py); each worker gets a slot before it forks.
_board = balance.board_for(workers)


def pre_fork(server: Any, worker: Any) -> None:
    if _board is not None:
        taken = {w.balance[1] for w in server.WORKERS.values() if hasattr(w, "balance")}
        worker.balance = (_board, _board.claim(taken))


@contextmanager
def _metric_values_elsewhere() -> Iterator[None]:
    """Metric values created inside go to a scratch directory, removed after. In the
    real one the master's values would count as a live process: `redis_available`
    (livemin) read 0 and `skygate_worker_connections` had a master series (seen)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        yield
        return
    scratch = tempfile.mkdtemp(prefix="skygate-master-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = scratch
    try:
        yield
    finally:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        shutil.rmtree(scratch, ignore_errors=True)


def when_ready(server: Any) -> None:
    """Before the first fork (and so before every later one, `max_requests`
    included): import here what each worker would import for itself, and freeze it.

    That is the app's modules and, when a deployment needs it, litellm with what
    its first call builds (`core.llm.litellm_import.preload_litellm`): installed
    files are read, nothing is connected, no thread is started. The GC is off
    meanwhile (start-up 0.5 s sooner; the imports leave almost no garbage, 3,448
    objects of 625,000), then `gc.freeze()`: the workers' collections never visit
    these objects, so they do not write into their headers, which would copy every
    shared page (litellm imported here without the freeze: more memory after
    traffic than without the preload). Measured: docs/PERFORMANCE.md, "Memory".
    """
    if server.cfg.reload:  # reloading workers must import the new code themselves
        return
    began = time.monotonic()
    module = (getattr(server.app, "app_uri", None) or "main_enterprise:app").split(":")[0]
    gc.disable()
    try:
        with _metric_values_elsewhere():
            importlib.import_module(module)
            from core.llm.factory import litellm_models
            from core.llm.litellm_import import preload_litellm

            models = sorted(litellm_models(_settings))
            if models:
                preload_litellm(models)
    finally:
        gc.freeze()
        gc.enable()
    structlog.get_logger("skygate.serving").info(
        "preloaded",
        module=module,
        litellm_models=[f"{provider}/{model}" for provider, model in models],
        seconds=round(time.monotonic() - began, 2),
    )


def child_exit(server: Any, worker: Any) -> None:
    """A worker died or was recycled: free its board slot, drop its live gauges,
    keep its counters."""
    board_slot = getattr(worker, "balance", None)
    if board_slot is not None:
        board, slot = board_slot
        board.release(slot)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
