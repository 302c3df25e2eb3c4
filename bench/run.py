"""Skygate's benchmark: what the gateway adds to every call, measured in one go.

    python -m bench.run              # `make bench`: direct to the upstream, then Skygate
    python -m bench.run --compare    # `make bench-compare`: also the LiteLLM proxy

One run starts a private PostgreSQL and Redis, two fake upstreams (0 ms and 50 ms before the
first byte, `bench/fake_upstream.py`), and per upstream latency Skygate under gunicorn with
2 workers in a production setup (and, with ``--compare``, the LiteLLM proxy with 2 workers).
For every cell (upstream latency x concurrency x mode) it drives each target in turn with
wrk (`bench/chat.lua`), so the targets see the same machine within seconds of each other.

Per cell: requests/s, latency percentiles, latency added over direct, errors, CPU ms per
request of the target's whole process tree, and its peak memory. Per target: start-up time
to the first 200 and idle memory. Results go to ``bench/results/<stamp>.json`` (and
``latest.json``), ``docs/benchmark.md``, ``docs/benchmark.png`` and the generated section of
``docs/PERFORMANCE.md`` (see `bench.report`).

Every process started here runs in its own session and is stopped by PID (then its process
group is killed) on success, failure, Ctrl-C or SIGTERM.

Settings (environment):

- BENCH_DURATION: whole seconds per measured cell (default 4);
- BENCH_WARMUP: whole seconds of unmeasured load before each cell (default 1, 0: none);
- BENCH_LATENCIES: upstream latencies in ms (default "0,50");
- BENCH_CONCURRENCY: connections (default "1,16,64");
- BENCH_MODES: default "unique,identical,stream";
- BENCH_WRK_THREADS: wrk threads, at most one per connection (default 1);
- BENCH_LOG_VARIANT: 1 (default) also measures Skygate at LOG_LEVEL=WARNING, 0 does not;
- BENCH_TRACE_VARIANT: 1 (default) also measures Skygate with tracing on, exporting
  OTLP/HTTP to a local sink (`bench.otlp_sink`), in the same cells; 0 does not;
- BENCH_MEMORY_CASES: the memory cases of `bench.memory` (default
  "openai,openai+anthropic,all"; empty: none), BENCH_MEMORY_ROUNDS their traffic;
- BENCH_GATEWAY_ENV: "K=V,K=V" extra Skygate settings, for experiments;
- BENCH_LITELLM_VENV: the proxy's virtualenv (default /tmp/skygate-bench/litellm-venv);
- BENCH_LITELLM_CACHE: the proxy's response cache, "redis" (default, the same Redis
  server as Skygate's) or "local" (in-process, per worker);
- BENCH_KEEP_LOGS: 1 keeps the work directory with every log (kept anyway on failure);
- BENCH_NOISE_RETRIES: times a cell is measured again when other processes used more than
  0.25 core during it (default 1; the quieter measurement is kept);
- BENCH_MAX_RETRIES: re-measurements allowed in the whole run (default 12, bounds its length).
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procstat
from tests.support.servers import PostgresServer, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
DOCS = ROOT / "docs"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
MODEL = "gpt-4o-mini"
MODES = ("unique", "identical", "stream")
UPSTREAM_KEY = "sk-bench"
WORKERS = 2
STARTUP_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
READY_LINE = "Application startup complete"
NOISY_CORES = 0.25  # unrelated CPU during a cell above which it is measured again

# --------------------------------------------------------------------------- settings


def _floats(name: str, default: str) -> list[float]:
    return [float(x) for x in os.environ.get(name, default).split(",") if x.strip()]


def _ints(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


@dataclass(frozen=True)
class Settings:
    compare: bool
    duration: int
    warmup: int
    latencies: list[float]
    concurrencies: list[int]
    modes: list[str]
    wrk_threads: int
    log_variant: bool
    trace_variant: bool
    gateway_env: dict[str, str]
    litellm_venv: Path
    litellm_cache: str
    keep_logs: bool
    write_docs: bool
    noise_retries: int
    max_retries: int

    @classmethod
    def from_env(cls, compare: bool, write_docs: bool) -> Settings:
        modes = [m.strip() for m in os.environ.get("BENCH_MODES", ",".join(MODES)).split(",")]
        unknown = set(modes) - set(MODES)
        if unknown:
            raise SystemExit(f"BENCH_MODES: unknown mode(s) {sorted(unknown)}; use {MODES}")
        extra = {}
        for pair in os.environ.get("BENCH_GATEWAY_ENV", "").split(","):
            if pair.strip():
                name, _, value = pair.partition("=")
                extra[name.strip()] = value.strip()
        cache = os.environ.get("BENCH_LITELLM_CACHE", "redis")
        if cache not in {"redis", "local"}:
            raise SystemExit("BENCH_LITELLM_CACHE must be 'redis' or 'local'")
        return cls(
            compare=compare,
            duration=max(1, int(os.environ.get("BENCH_DURATION", "4"))),
            warmup=max(0, int(os.environ.get("BENCH_WARMUP", "1"))),
            latencies=_floats("BENCH_LATENCIES", "0,50"),
            concurrencies=_ints("BENCH_CONCURRENCY", "1,16,64"),
            modes=modes,
            wrk_threads=int(os.environ.get("BENCH_WRK_THREADS", "1")),
            log_variant=os.environ.get("BENCH_LOG_VARIANT", "1") == "1",
            trace_variant=os.environ.get("BENCH_TRACE_VARIANT", "1") == "1",
            gateway_env=extra,
            litellm_venv=Path(
                os.environ.get("BENCH_LITELLM_VENV", "/tmp/skygate-bench/litellm-venv")
            ),
            litellm_cache=cache,
            keep_logs=os.environ.get("BENCH_KEEP_LOGS", "0") == "1",
            write_docs=write_docs,
            noise_retries=max(0, int(os.environ.get("BENCH_NOISE_RETRIES", "1"))),
            max_retries=max(0, int(os.environ.get("BENCH_MAX_RETRIES", "12"))),
        )


# --------------------------------------------------------------------------- processes


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Service:
    """A process we started, in its own session, with its output in a log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0

    def start(self) -> Service:
        with self.log_path.open("ab") as log:
            self.spawned_at = time.monotonic()
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the leader, wait, then SIGKILL the whole process group (strays included)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {timeout:.0f} s: SIGKILL")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self in _LIVE:
            _LIVE.remove(self)


_LIVE: list[Service] = []


def _stop_all() -> None:
    for service in reversed(list(_LIVE)):
        try:
            service.stop(timeout=10)
        except Exception as exc:  # keep stopping the others
            print(f"[bench] stopping {service.name} failed: {exc!r}", file=sys.stderr)


atexit.register(_stop_all)


def _raise_exit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes] | None:
    """One HTTP/1.1 request on loopback; None when the connection fails."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_until(
    what: str, check: Callable[[], bool], service: Service, timeout: float = STARTUP_TIMEOUT
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not service.alive:
            raise RuntimeError(
                f"{service.name} exited while waiting for {what}:\n{service.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{service.name}: no {what} within {timeout:.0f} s:\n{service.log_tail()}"
            )
        time.sleep(0.01)


def redis_command_calls(port: int) -> dict[str, int]:
    """Calls per command so far (`INFO commandstats`) of the Redis server on `port`."""
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(b"INFO commandstats\r\n")
        data = b""
        while b"\r\n" not in data:
            data += sock.recv(65536)
        header, _, rest = data.partition(b"\r\n")
        length = int(header[1:])  # a bulk string: $<length>
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    calls = {}
    for match in re.finditer(r"^cmdstat_([^:]+):calls=(\d+)", rest.decode(), re.MULTILINE):
        calls[match.group(1)] = int(match.group(2))
    return calls


def chat_body(content: str, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


# --------------------------------------------------------------------------- targets


@dataclass
class Startup:
    """How a gateway came up, and its idle footprint before any load."""

    first_200_s: float  # spawn -> first 200 on the liveness probe
    all_workers_s: float  # spawn -> every worker logged "Application startup complete"
    first_completion_s: float  # spawn -> first 200 on a chat completion
    idle_rss_mib: float
    idle_pss_mib: float
    processes: int
    idle_cpu_cores: float  # CPU seconds per second over 2 s without requests
    rss_after_load_mib: float | None = None
    pss_after_load_mib: float | None = None


@dataclass
class Target:
    name: str  # direct | skygate | litellm | skygate-warning
    label: str
    latency_ms: float
    port: int
    path: str
    key: str
    service: Service
    startup: Startup | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"


def start_upstream(latency_ms: float, workdir: Path) -> Service:
    port = free_port()
    service = Service(
        f"upstream-{latency_ms:g}ms",
        [str(VENV_BIN / "python"), "-m", "bench.fake_upstream", "--port", str(port),
         "--latency-ms", f"{latency_ms:g}"],
        {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")},
        workdir / f"upstream-{latency_ms:g}ms.log",
    ).start()  # fmt: skip
    service.env["PORT"] = str(port)
    wait_until(
        "health", lambda: (http_request(port, "GET", "/health") or (0,))[0] == 200, service, 30
    )
    return service


@dataclass
class Credentials:
    """One run's Skygate secrets, shared by every Skygate instance (they share the database).

    The load uses a tenant API key, created once through the admin API with every limit set
    high, so each request goes through the key lookup, the rate limits (requests and tokens)
    and the budget check, as a customer's would. The admin key only creates it.
    """

    admin_key: str = field(default_factory=lambda: "sk-skygate-bench-" + secrets.token_hex(16))
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    tenant_key: str | None = None


TENANT_KEY_REQUEST = {
    "name": "bench",
    "tenant": "bench",
    "rpm_limit": 100_000_000,
    "rph_limit": 100_000_000,
    "tpm_limit": 2_000_000_000,  # the column is a 32-bit integer
    "monthly_budget_usd": 1_000_000.0,
}


def ensure_tenant_key(port: int, creds: Credentials) -> str:
    """Create the run's tenant key (once) and check that it is accepted."""
    if creds.tenant_key is None:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {creds.admin_key}",
        }
        body = json.dumps(TENANT_KEY_REQUEST).encode()
        result = http_request(port, "POST", "/api/v1/keys", body, headers, timeout=30)
        if result is None or result[0] != 201:
            raise RuntimeError(f"creating the tenant key failed: {result!r}")
        creds.tenant_key = str(json.loads(result[2])["key"])
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {creds.tenant_key}"}
    probe = chat_body(f"tenant key probe {secrets.token_hex(8)}")
    result = http_request(port, "POST", "/api/v1/chat/completions", probe, headers, timeout=30)
    if result is None or result[0] != 200:
        raise RuntimeError(f"a completion with the tenant key failed: {result!r}")
    return creds.tenant_key


def skygate_env(
    *, port: int, upstream_port: int, pg: PostgresServer, redis: RedisServer,
    creds: Credentials, workdir: Path, log_level: str, extra: dict[str, str],
) -> dict[str, str]:  # fmt: skip
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "ENVIRONMENT": "production",
        "DATABASE_URL": f"postgresql://postgres@{HOST}:{pg.port}/bench",
        "REDIS_URL": redis.url,
        "JWT_SECRET_KEY": creds.jwt_secret,
        "ADMIN_API_KEY": creds.admin_key,
        "CORS_ORIGINS": "https://bench.example",
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "OPENAI_API_BASE": f"http://{HOST}:{upstream_port}/v1",
        "OPENAI_MODEL": MODEL,
        "OPENAI_MODEL_FALLBACK": "",
        "RATE_LIMIT_PER_MINUTE": "100000000",
        "RATE_LIMIT_PER_HOUR": "100000000",
        "ENABLE_CACHE": "true",
        "ENABLE_METRICS": "true",
        "METRICS_TOKEN": creds.admin_key,  # production refuses to start without one
        "HOST": HOST,
        "WEB_CONCURRENCY": str(WORKERS),
        "PORT": str(port),
        "LOG_LEVEL": log_level,
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"prometheus-{port}"),
        # Only changes how long a stop takes (the readiness drain after SIGTERM).
        "SHUTDOWN_DRAIN_SECONDS": "0",
        **extra,
    }


def postmaster_pid(pg: PostgresServer) -> int | None:
    try:
        return int((pg.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def count_ready_lines(service: Service) -> int:
    return service.log_text().count(READY_LINE)


def workers_settled(service: Service, quiet: float = 0.5) -> Callable[[], bool]:
    """A check for when no log line says so: every worker forked and the tree's CPU flat."""
    last: list[float] = []
    since = [time.monotonic()]

    def check() -> bool:
        snap = procstat.snapshot([service.pid], pss=False)
        now = time.monotonic()
        if len(snap.pids) < WORKERS + 1 or (last and snap.cpu_seconds - last[0] > 0.02):
            since[0] = now
        last[:] = [snap.cpu_seconds]
        time.sleep(0.1)
        return now - since[0] >= quiet

    return check


def measure_startup(
    service: Service, port: int, live_path: str, chat_path: str, key: str, *, log_ready: bool
) -> Startup:
    """Time from spawn to the first 200s, then the idle footprint once every worker is up.

    "All workers up" is when the log holds one "Application startup complete" per worker
    (uvicorn logs it at INFO), or, with `log_ready` false, when every worker has forked and the
    tree's CPU time has stopped growing.
    """
    wait_until(
        f"200 on {live_path}",
        lambda: (http_request(port, "GET", live_path, timeout=10) or (0,))[0] == 200,
        service,
    )
    first_200 = time.monotonic() - service.spawned_at
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    probe = chat_body(f"start-up probe {secrets.token_hex(8)}")
    result = http_request(port, "POST", chat_path, probe, headers, timeout=30)
    if result is None or result[0] != 200:
        raise RuntimeError(
            f"{service.name}: first chat completion failed: {result!r}\n{service.log_tail()}"
        )
    first_completion = time.monotonic() - service.spawned_at
    if log_ready:
        wait_until(f"{WORKERS} workers", lambda: count_ready_lines(service) >= WORKERS, service)
    else:
        wait_until(f"{WORKERS} settled workers", workers_settled(service), service)
    all_workers = time.monotonic() - service.spawned_at
    time.sleep(1.0)  # let the first request's lazy work and the start-up garbage settle
    quiet = procstat.snapshot([service.pid], pss=False)
    time.sleep(2.0)
    idle = procstat.snapshot([service.pid])
    return Startup(
        first_200_s=round(first_200, 3),
        all_workers_s=round(all_workers, 3),
        first_completion_s=round(first_completion, 3),
        idle_rss_mib=round(idle.rss_mib, 1),
        idle_pss_mib=round(idle.pss_mib, 1),
        processes=len(idle.pids),
        idle_cpu_cores=round((idle.cpu_seconds - quiet.cpu_seconds) / 2.0, 3),
    )


def start_skygate(
    name: str, label: str, latency_ms: float, upstream: Service, pg: PostgresServer,
    redis: RedisServer, creds: Credentials, workdir: Path, settings: Settings,
    log_level: str = "INFO",
) -> Target:  # fmt: skip
    port = free_port()
    env = skygate_env(
        port=port, upstream_port=int(upstream.env["PORT"]), pg=pg, redis=redis, creds=creds,
        workdir=workdir, log_level=log_level, extra=settings.gateway_env,
    )  # fmt: skip
    service = Service(
        f"{name}-{latency_ms:g}ms",
        [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "main_enterprise:app"],
        env,
        workdir / f"{name}-{latency_ms:g}ms.log",
    )
    say(f"starting {label} (upstream {latency_ms:g} ms) on port {port}")
    service.start()
    startup = measure_startup(
        service,
        port,
        "/live",
        "/api/v1/chat/completions",
        creds.admin_key,
        log_ready=log_level == "INFO",
    )
    key = ensure_tenant_key(port, creds)
    say(
        f"{label}: first 200 after {startup.first_200_s:.2f} s, idle {startup.idle_rss_mib:.0f} MiB"
        f" RSS / {startup.idle_pss_mib:.0f} MiB PSS in {startup.processes} processes"
    )
    target = Target(name, label, latency_ms, port, "/api/v1/chat/completions", key, service)
    target.startup = startup
    return target


def litellm_config(upstream_port: int, redis: RedisServer, cache: str, master_key: str) -> str:
    if cache == "redis":
        cache_params = f"""    type: redis
    host: {HOST}
    port: {redis.port}"""
    else:
        cache_params = "    type: local"
    return f"""# Generated by bench/run.py: the LiteLLM proxy pointed at the fake upstream.
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://{HOST}:{upstream_port}/v1
      api_key: {UPSTREAM_KEY}
litellm_settings:
  cache: true
  cache_params:
{cache_params}
general_settings:
  master_key: {master_key}
"""


def start_litellm(
    latency_ms: float, upstream: Service, redis: RedisServer, workdir: Path, settings: Settings
) -> Target:
    exe = settings.litellm_venv / "bin" / "litellm"
    if not exe.exists():
        raise SystemExit(
            f"{exe} not found: `make bench-compare` creates it (pip install 'litellm[proxy]')"
        )
    port = free_port()
    key = "sk-litellm-bench-" + secrets.token_hex(16)
    config = workdir / f"litellm-{latency_ms:g}ms.yaml"
    config.write_text(litellm_config(int(upstream.env["PORT"]), redis, settings.litellm_cache, key))
    env = {
        "PATH": f"{exe.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # loopback only: no fetch at start
    }
    service = Service(
        f"litellm-{latency_ms:g}ms",
        [str(exe), "--config", str(config), "--host", HOST, "--port", str(port),
         "--num_workers", str(WORKERS)],
        env,
        workdir / f"litellm-{latency_ms:g}ms.log",
    )  # fmt: skip
    say(f"starting the LiteLLM proxy (upstream {latency_ms:g} ms) on port {port}")
    service.start()
    startup = measure_startup(
        service, port, "/health/liveliness", "/v1/chat/completions", key, log_ready=True
    )
    say(
        f"LiteLLM proxy: first 200 after {startup.first_200_s:.2f} s, idle "
        f"{startup.idle_rss_mib:.0f} MiB RSS / {startup.idle_pss_mib:.0f} MiB PSS in "
        f"{startup.processes} processes"
    )
    target = Target(
        "litellm", "LiteLLM proxy", latency_ms, port, "/v1/chat/completions", key, service
    )
    target.startup = startup
    return target


# --------------------------------------------------------------------------- measuring


@dataclass
class Cell:
    target: str
    label: str
    latency_ms: float
    concurrency: int
    mode: str
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: int
    errors_detail: dict[str, int]
    cpu_ms_per_req: float | None  # the target's whole process tree
    cpu_cores: float  # the target's CPU seconds per wall second
    peak_rss_mib: float
    peak_pss_mib: float
    cache_hit_ratio: float | None  # identical mode only (from response headers)
    worker_restarts: int  # processes that appeared in the target's tree (warm-up included)
    upstream_cores: float  # the fake upstream's CPU seconds per wall second
    infra_cpu_ms_per_req: float | None  # PostgreSQL + Redis
    loadgen_cores: float  # wrk's CPU seconds per wall second
    other_cores: float  # everything else on the machine (other gateways idle, other users)
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    attempts: int = 1  # measured more than once when the machine was noisy
    started_at: str = ""  # UTC, to match against the gateways' logs
    redis_calls_per_req: float | None = None  # Redis commands per request (INFO commandstats)
    redis_calls: dict[str, int] = field(default_factory=dict)


@dataclass
class WrkResult:
    raw: dict[str, Any]
    cpu_seconds: float


def run_wrk(target: Target, mode: str, connections: int, seconds: int, nonce: str,
            threads: int) -> WrkResult:  # fmt: skip
    threads = max(1, min(threads, connections))
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
            "--latency", "-s", str(BENCH / "chat.lua"), target.url]  # fmt: skip
    env = {
        **os.environ,
        "BENCH_MODE": mode,
        "BENCH_KEY": target.key,
        "BENCH_MODEL": MODEL,
        "BENCH_NONCE": nonce,
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=seconds + 60)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        raise
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    text = out.decode(errors="replace")
    match = re.search(r"^BENCH_JSON (\{.*\})$", text, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        stderr = err.decode(errors="replace")
        raise RuntimeError(f"wrk failed ({proc.returncode}) on {target.url}:\n{text}\n{stderr}")
    return WrkResult(json.loads(match.group(1)), cpu)


def measure(
    target: Target, latency_ms: float, concurrency: int, mode: str, settings: Settings,
    upstream: Service, infra_pids: list[int], run_id: str, attempt: int = 1,
    redis_port: int | None = None,
) -> Cell:  # fmt: skip
    tag = f"{run_id}-{target.name}-{latency_ms:g}-{concurrency}-{mode}-{attempt}"
    # Workers recycled during the warm-up still drain (and close connections) in the cell.
    pids_before_warmup = set(procstat.snapshot([target.service.pid], pss=False).pids)
    if settings.warmup > 0:
        run_wrk(target, mode, concurrency, settings.warmup, tag + "-warm", settings.wrk_threads)
    groups = {
        "target": [target.service.pid],
        "upstream": [upstream.pid],
        "infra": infra_pids,
    }
    before = procstat.snapshots(groups, pss=False)
    busy_before = procstat.machine_busy_seconds()
    redis_before = redis_command_calls(redis_port) if redis_port else {}
    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    with procstat.PeakSampler({"target": groups["target"]}) as sampler:
        result = run_wrk(target, mode, concurrency, settings.duration, tag, settings.wrk_threads)
    wall = time.monotonic() - started
    after = procstat.snapshots(groups, pss=False)
    busy = procstat.machine_busy_seconds() - busy_before
    redis_after = redis_command_calls(redis_port) if redis_port else {}
    redis_calls = {
        name: calls - redis_before.get(name, 0)
        for name, calls in redis_after.items()
        if name != "info" and calls - redis_before.get(name, 0) > 0
    }

    raw = result.raw
    requests = int(raw["requests"])
    latency = raw["latency_us"]
    errors_detail = {k: int(v) for k, v in raw["errors"].items() if int(v)}
    target_cpu = after["target"].cpu_seconds - before["target"].cpu_seconds
    infra_cpu = after["infra"].cpu_seconds - before["infra"].cpu_seconds
    upstream_cpu = after["upstream"].cpu_seconds - before["upstream"].cpu_seconds
    # The machine's busy time not spent by anything this cell measures: noise.
    ours = target_cpu + infra_cpu + result.cpu_seconds
    if target.service is not upstream:
        ours += upstream_cpu
    new_pids = (sampler.pids_seen("target") | set(before["target"].pids)) - pids_before_warmup
    cell = Cell(
        target=target.name,
        label=target.label,
        latency_ms=latency_ms,
        concurrency=concurrency,
        mode=mode,
        duration_s=round(raw["duration_us"] / 1e6, 3),
        requests=requests,
        rps=round(requests / (raw["duration_us"] / 1e6), 1),
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        p999_ms=latency["p999"] / 1000,
        max_ms=latency["max"] / 1000,
        errors=sum(errors_detail.values()),
        errors_detail=errors_detail,
        cpu_ms_per_req=round(target_cpu * 1000 / requests, 3) if requests else None,
        cpu_cores=round(target_cpu / wall, 3),
        peak_rss_mib=round(sampler.peak_rss_mib("target"), 1),
        peak_pss_mib=round(sampler.peak_pss_mib("target"), 1),
        cache_hit_ratio=(
            round(raw["cache_hits"] / requests, 4)
            if raw["counted_hits"] and requests and target.name != "direct"
            else None
        ),
        worker_restarts=len(new_pids),
        upstream_cores=round(upstream_cpu / wall, 3),
        infra_cpu_ms_per_req=round(infra_cpu * 1000 / requests, 3) if requests else None,
        loadgen_cores=round(result.cpu_seconds / wall, 3),
        other_cores=round(max(0.0, busy - ours) / wall, 3),
        attempts=attempt,
        started_at=started_at,
        redis_calls_per_req=(
            round(sum(redis_calls.values()) / requests, 2) if requests and redis_port else None
        ),
        redis_calls=dict(sorted(redis_calls.items(), key=lambda kv: -kv[1])),
    )
    say(
        f"  {target.label:<26} {latency_ms:>3g} ms c{concurrency:<3} {mode:<9} "
        f"{cell.rps:>9.1f} req/s  p50 {cell.p50_ms:7.2f}  p99 {cell.p99_ms:7.2f} ms  "
        f"err {cell.errors}  cpu {cell.cpu_ms_per_req} ms/req  rss {cell.peak_rss_mib:.0f} MiB"
        + (f"  hits {cell.cache_hit_ratio:.1%}" if cell.cache_hit_ratio is not None else "")
        + (f"  redis {cell.redis_calls_per_req}/req" if cell.redis_calls_per_req else "")
        + (f"  restarts {cell.worker_restarts}" if cell.worker_restarts else "")
        + (f"  other cpu {cell.other_cores:.2f} cores" if cell.other_cores >= 0.1 else "")
    )
    return cell


def add_deltas(cells: list[Cell]) -> None:
    """Latency added over direct, per cell."""
    direct = {(c.latency_ms, c.concurrency, c.mode): c for c in cells if c.target == "direct"}
    for cell in cells:
        base = direct.get((cell.latency_ms, cell.concurrency, cell.mode))
        if base is not None and cell.target != "direct":
            cell.added_p50_ms = round(cell.p50_ms - base.p50_ms, 3)
            cell.added_p99_ms = round(cell.p99_ms - base.p99_ms, 3)


# --------------------------------------------------------------------------- logs


_SKYGATE_QUIET = re.compile(r'"level": ?"(info|debug)"')
_STATUS = re.compile(r'"status": ?(\d{3})')


def skygate_log_problems(text: str, limit: int = 15) -> dict[str, Any]:
    """Warnings, errors and non-2xx access lines in a Skygate (JSON) log."""
    counts: dict[str, int] = {}
    samples: list[str] = []
    for line in text.splitlines():
        status = _STATUS.search(line)
        bad_status = status is not None and not status.group(1).startswith(("2", "3"))
        if _SKYGATE_QUIET.search(line) and not bad_status:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"event": line[:300], "level": "raw"}
        if not isinstance(entry, dict):
            continue
        key = f"{entry.get('level')}: {entry.get('event')}"
        exception = entry.get("exception")
        if isinstance(exception, str) and exception:
            # The exception's last line names it; keep it in the key, the tail in the sample.
            key += f" ({exception.strip().splitlines()[-1][:120]})"
        if bad_status:
            key += f" {status.group(1) if status else ''}"
        counts[key] = counts.get(key, 0) + 1
        if counts[key] <= 2 and len(samples) < limit:
            if isinstance(exception, str) and exception:
                head = {k: v for k, v in entry.items() if k != "exception"}
                samples.append(f"{json.dumps(head)}\n  ...{exception[-2500:]}")
            else:
                samples.append(line[:1500])
    return {"counts": counts, "samples": samples}


_LITELLM_BAD = re.compile(r'HTTP/1\.1" [45]\d\d|ERROR|Traceback|Exception')


def litellm_log_problems(text: str, limit: int = 15) -> dict[str, Any]:
    counts: dict[str, int] = {}
    samples: list[str] = []
    for line in text.splitlines():
        if not _LITELLM_BAD.search(line):
            continue
        key = re.sub(r"\d+", "N", line.strip())[:160]
        counts[key] = counts.get(key, 0) + 1
        if counts[key] <= 2 and len(samples) < limit:
            samples.append(line[:1500])
    return {"counts": counts, "samples": samples}


# --------------------------------------------------------------------------- machine


def _command_output(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (
        (result.stdout or result.stderr).strip().splitlines()[0]
        if (result.stdout or result.stderr)
        else "?"
    )


def machine_info(settings: Settings) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text()
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    os_release = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]+)', os_release, re.MULTILINE)
    info: dict[str, Any] = {
        "cpu_model": models[0] if models else platform.processor(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": pretty.group(1) if pretty else platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": " ".join(_command_output(["wrk", "-v"]).split()[:2]),
        "redis": re.sub(
            r"^Redis server v=(\S+).*", r"Redis \1", _command_output(["redis-server", "--version"])
        ),
        "postgresql": _command_output(["pg_config", "--version"]),
    }
    commit = _command_output(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", ".",
         ":!bench", ":!docs", ":!Makefile"],
        capture_output=True, text=True, timeout=20,
    ).stdout.strip()  # fmt: skip
    info["skygate_commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    if settings.compare:
        info["litellm_proxy"] = _command_output(
            [str(settings.litellm_venv / "bin" / "python"), "-c",
             "import importlib.metadata as m; print(m.version('litellm'))"]
        )  # fmt: skip
    return info


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    run_id: str
    started: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    cells: list[Cell] = field(default_factory=list)
    variants: list[Cell] = field(default_factory=list)
    startups: list[dict[str, Any]] = field(default_factory=list)
    log_problems: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)  # bench.memory, all providers
    elapsed_s: float = 0.0
    finished: str = ""
    complete: bool = False


class RetryBudget:
    """Re-measurements of noisy cells left in this run (bounds the run's length)."""

    def __init__(self, total: int) -> None:
        self.left = total


def _cells_for(
    targets: Iterable[Target], latency: float, settings: Settings, upstream: Service,
    infra: list[int], run_id: str, concurrencies: list[int], budget: RetryBudget,
    redis_port: int,
) -> list[Cell]:  # fmt: skip
    """Measure every cell on each target in turn; a cell that shared the machine with more
    than `NOISY_CORES` of unrelated CPU is measured again (within the budget) and the quieter
    of the two kept."""
    cells = []
    for concurrency in concurrencies:
        for mode in settings.modes:
            for target in targets:
                args = (target, latency, concurrency, mode, settings, upstream, infra, run_id)
                port = None if target.name == "direct" else redis_port
                cell = measure(*args, redis_port=port)
                while cell.other_cores >= NOISY_CORES and cell.attempts <= settings.noise_retries:
                    if budget.left <= 0:
                        break
                    budget.left -= 1
                    say(f"  noisy ({cell.other_cores:.2f} cores of other work): measuring again")
                    again = measure(*args, attempt=cell.attempts + 1, redis_port=port)
                    if again.other_cores < cell.other_cores:
                        cell = again
                    else:
                        cell.attempts = again.attempts
                cells.append(cell)
    return cells


def _finish_target(target: Target, run: Run) -> None:
    """After-load idle footprint, log problems, then stop the target."""
    if target.startup is not None and target.service.alive:
        time.sleep(1.0)
        snap = procstat.snapshot([target.service.pid])
        target.startup.rss_after_load_mib = round(snap.rss_mib, 1)
        target.startup.pss_after_load_mib = round(snap.pss_mib, 1)
        run.startups.append(
            {"target": target.name, "label": target.label, "latency_ms": target.latency_ms,
             **asdict(target.startup)}
        )  # fmt: skip
    text = target.service.log_text()
    problems = (
        litellm_log_problems(text) if target.name == "litellm" else skygate_log_problems(text)
    )
    if problems["counts"]:
        run.log_problems[target.service.name] = problems
    if target.name != "direct":
        target.service.stop()


def bench(settings: Settings) -> Run:
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(tempfile.gettempdir()) / "skygate-bench"
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"run-{run_id}-", dir=base))
    run = Run(
        run_id=run_id,
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        machine=machine_info(settings),
    )
    began = time.monotonic()
    pg: PostgresServer | None = None
    redis: RedisServer | None = None
    upstreams: dict[float, Service] = {}
    active: list[Target] = []
    try:
        say(f"work directory {workdir}")
        pg = PostgresServer(workdir)
        pg.start()
        pg.create_database("bench")
        redis = RedisServer(workdir)
        redis.start()
        say(f"PostgreSQL on {pg.port}, Redis on {redis.port}")
        creds = Credentials()
        budget = RetryBudget(settings.max_retries)
        migrate_env = skygate_env(
            port=free_port(), upstream_port=1, pg=pg, redis=redis, creds=creds,
            workdir=workdir, log_level="WARNING", extra={},
        )  # fmt: skip
        migrated = subprocess.run(
            [str(VENV_BIN / "alembic"), "upgrade", "head"], cwd=ROOT, env=migrate_env,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if migrated.returncode != 0:
            raise RuntimeError(f"alembic upgrade head failed:\n{migrated.stderr}")
        infra = [p for p in (postmaster_pid(pg), redis.pid) if p]

        for latency in settings.latencies:
            upstreams[latency] = start_upstream(latency, workdir)
        say("fake upstreams on " + ", ".join(
            f"{lat:g} ms: {up.env['PORT']}" for lat, up in upstreams.items()
        ))  # fmt: skip

        for latency in settings.latencies:
            upstream = upstreams[latency]
            direct = Target(
                "direct", "direct (fake upstream)", latency, int(upstream.env["PORT"]),
                "/v1/chat/completions", UPSTREAM_KEY, upstream,
            )  # fmt: skip
            active = [direct]
            active.append(
                start_skygate(
                    "skygate", "Skygate", latency, upstream, pg, redis, creds, workdir, settings
                )
            )
            if settings.compare:
                active.append(start_litellm(latency, upstream, redis, workdir, settings))
            say(f"measuring at upstream latency {latency:g} ms")
            run.cells += _cells_for(
                active,
                latency,
                settings,
                upstream,
                infra,
                run_id,
                settings.concurrencies,
                budget,
                redis.port,
            )
            for target in active:
                _finish_target(target, run)
            active = []

        if settings.log_variant:
            latency = settings.latencies[0]
            concurrency = 16 if 16 in settings.concurrencies else settings.concurrencies[-1]
            upstream = upstreams[latency]
            variant = start_skygate(
                "skygate-warning", "Skygate, LOG_LEVEL=WARNING", latency, upstream, pg, redis,
                creds, workdir, settings, log_level="WARNING",
            )  # fmt: skip
            active = [variant]
            say("measuring the LOG_LEVEL=WARNING variant")
            run.variants += _cells_for(
                active,
                latency,
                settings,
                upstream,
                infra,
                run_id,
                [concurrency],
                budget,
                redis.port,
            )
            _finish_target(variant, run)
            active = []
        if settings.trace_variant:
            from bench.otlp_sink import measure_traced

            measure_traced(
                run, settings=settings, latency=settings.latencies[0],
                concurrency=16 if 16 in settings.concurrencies else settings.concurrencies[-1],
                upstream=upstreams[settings.latencies[0]], pg=pg, redis=redis, creds=creds,
                workdir=workdir, infra=infra, budget=budget,
            )  # fmt: skip
        from bench.memory import MemorySettings, measure_cases

        memory = MemorySettings.from_env(settings.gateway_env)
        if memory.cases:
            run.memory = measure_cases(
                upstream_port=int(upstreams[settings.latencies[0]].env["PORT"]), pg=pg,
                redis=redis, creds=creds, workdir=workdir, settings=memory,
            )  # fmt: skip
        run.complete = True
    finally:
        for target in active:
            if target.name != "direct":
                target.service.stop()
        for upstream in upstreams.values():
            upstream.stop()
        _stop_all()
        if redis is not None:
            redis.close()
        if pg is not None:
            pg.close()
        run.elapsed_s = round(time.monotonic() - began, 1)
        run.finished = datetime.now(UTC).isoformat(timespec="seconds")
        if settings.keep_logs or not run.complete:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    add_deltas(run.cells + run.variants)
    return run


def save(run: Run) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = asdict(run)
    path = RESULTS / f"{run.run_id}{'-compare' if run.settings['compare'] else ''}.json"
    text = json.dumps(data, indent=2)
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--compare", action="store_true", help="also measure the LiteLLM proxy")
    parser.add_argument(
        "--no-docs", action="store_true", help="write bench/results only, not docs/"
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk (or `make test-deps`)")
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    settings = Settings.from_env(compare=args.compare, write_docs=not args.no_docs)

    from bench import report  # matplotlib is imported lazily inside

    run = bench(settings)
    path = save(run)
    say(f"results: {path.relative_to(ROOT)} (elapsed {run.elapsed_s:.0f} s)")
    data = json.loads(path.read_text())
    if settings.write_docs:
        for written in report.write_docs(data, DOCS):
            say(f"wrote {written.relative_to(ROOT)}")
    print()
    print(report.console_summary(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
