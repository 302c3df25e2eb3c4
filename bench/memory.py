"""Memory of Skygate with every provider configured (issue #15, item 5).

    python -m bench.memory   # the cases alone: bench/results/memory-*.json, the console
    make bench               # `bench.run` runs them after its cells (`measure_cases`): the
                             # run's `memory`, rendered by `bench.memory_report`

Each case is Skygate under gunicorn, 2 workers, in the production setup of `bench.run`
(`skygate_env`), with a set of providers configured by their environment variables
alone (a key, and a base URL pointing at the fake upstream; the default model group
each key enables, `core.llm.providers`). Per case:

1. start-up: spawn to the first 200 on `/ready`, and to every worker's "Application
   startup complete";
2. idle: once the tree's CPU is flat, PSS, RSS and USS (private pages) of the master
   and of each worker, read from /proc/PID/smaps_rollup, and their sums;
3. traffic: on every configured provider, `rounds` x (a chat, a stream, a tool call,
   a streamed tool call, the turn carrying a tool result), over `CONNECTIONS`
   keep-alive connections opened together so that both workers take some
   (core/serving/balance.py spreads them); answers are counted by status per provider,
   and the CPU each worker used during the traffic shows that both served;
4. after traffic: the same reading again, once the tree is quiet.

PSS is the figure that adds up: pages shared by the forked workers (and the master)
are split between them, so the sum over the tree is what the machine holds. RSS counts
each shared page once per process. The targets (issue #15, `bench.memory_report`): with
all six providers, after traffic on each, at most 400 MiB PSS for master + 2 workers,
and `/ready` within 3 s of the spawn.

Settings (environment): BENCH_MEMORY_CASES (default "openai,openai+anthropic,all";
empty: no case), BENCH_MEMORY_ROUNDS (default 8); BENCH_GATEWAY_ENV and BENCH_KEEP_LOGS
as in `bench.run`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procstat
from bench.run import (
    HOST,
    MODEL,
    RESULTS,
    ROOT,
    UPSTREAM_KEY,
    VENV_BIN,
    WORKERS,
    Credentials,
    Service,
    count_ready_lines,
    http_request,
    say,
    skygate_env,
    start_upstream,
    wait_until,
    workers_settled,
)
from core.llm.providers import DEFAULT_MODELS, PROVIDERS
from tests.support.servers import PostgresServer, RedisServer, free_port

ALL_PROVIDERS = ("openai", "anthropic", "google", "groq", "mistral", "cohere")
CASES: dict[str, tuple[str, ...]] = {
    "openai": ("openai",),
    "openai+anthropic": ("openai", "anthropic"),
    "all": ALL_PROVIDERS,
}
CASE_LABELS = {
    "openai": "OpenAI only",
    "openai+anthropic": "OpenAI + Anthropic",
    "all": "all six providers",
}
REQUEST_KINDS = ("chat", "stream", "tools", "tools_stream", "tool_result")
CONNECTIONS = 4
GUNICORN = ["gunicorn", "-c", "gunicorn.conf.py", "main_enterprise:app"]


@dataclass(frozen=True)
class MemorySettings:
    cases: tuple[str, ...]
    rounds: int
    gateway_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, gateway_env: dict[str, str] | None = None) -> MemorySettings:
        names = tuple(
            n.strip()
            for n in os.environ.get("BENCH_MEMORY_CASES", ",".join(CASES)).split(",")
            if n.strip()
        )
        unknown = set(names) - set(CASES)
        if unknown:
            raise SystemExit(
                f"BENCH_MEMORY_CASES: unknown case(s) {sorted(unknown)}; use {list(CASES)}"
            )
        return cls(
            cases=names,
            rounds=max(1, int(os.environ.get("BENCH_MEMORY_ROUNDS", "8"))),
            gateway_env=dict(gateway_env or {}),
        )


# --------------------------------------------------------------------------- providers


def model_of(kind: str) -> str:
    """The model group the provider's key alone enables (OpenAI's is OPENAI_MODEL)."""
    return MODEL if kind == "openai" else DEFAULT_MODELS[kind]


_BASE_SUFFIX = {"google": "/v1beta"}


def provider_env(kinds: Iterable[str], upstream_port: int) -> dict[str, str]:
    """A key and a base URL per provider, every one on the fake upstream: OpenAI's
    protocol under /v1 for the direct kinds; for the others, what their real base URL
    is: the host (Anthropic's /v1/messages and Cohere's /v2/chat are appended to it),
    or Google's, ending in /v1beta."""
    root = f"http://{HOST}:{upstream_port}"
    env: dict[str, str] = {}
    for kind in kinds:
        spec = PROVIDERS[kind]
        assert spec.key_variable and spec.base_variable, kind
        env[spec.key_variable] = UPSTREAM_KEY if kind == "openai" else f"sk-bench-{kind}"
        suffix = "/v1" if spec.transport == "direct" else _BASE_SUFFIX.get(kind, "")
        env[spec.base_variable] = root + suffix
    return env


# --------------------------------------------------------------------------- readings


def _rollup(pid: int) -> dict[str, float]:
    """Rss, Pss and private (USS) MiB of one process; zeros when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {"rss_mib": 0.0, "pss_mib": 0.0, "uss_mib": 0.0}
    kib = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.M)}
    private = kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)
    return {
        "rss_mib": round(kib.get("Rss", 0) / 1024, 1),
        "pss_mib": round(kib.get("Pss", 0) / 1024, 1),
        "uss_mib": round(private / 1024, 1),
    }


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of one process so far (utime + stime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / procstat.CLOCK_TICKS


def reading(master: int) -> dict[str, Any]:
    """The master's and each worker's memory, and the sums over the tree."""
    pids = procstat.snapshot([master], pss=False).pids
    workers = [pid for pid in pids if pid != master]
    each = {pid: _rollup(pid) for pid in pids}
    total = {
        k: round(sum(r[k] for r in each.values()), 1) for k in ("rss_mib", "pss_mib", "uss_mib")
    }
    return {
        "master": each.get(master, _rollup(master)),
        "workers": [{"pid": pid, **each[pid]} for pid in workers],
        "total": total,
    }


# --------------------------------------------------------------------------- traffic

_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def request_body(kind: str, model: str, nonce: str) -> dict[str, Any]:
    """One request of `kind` (REQUEST_KINDS); `nonce` keeps it out of the cache."""
    user = {"role": "user", "content": f"What is the weather in Paris? ({nonce})"}
    body: dict[str, Any] = {"model": model, "messages": [user], "max_tokens": 64}
    if kind == "chat":
        user["content"] = f"Say hello ({nonce})"
    elif kind == "stream":
        user["content"] = f"Say hello ({nonce})"
        body["stream"] = True
    elif kind in ("tools", "tools_stream"):
        body["tools"] = _TOOLS
        body["stream"] = kind == "tools_stream"
    elif kind == "tool_result":
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
        body["tools"] = _TOOLS
        body["messages"] = [
            user,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
        ]
    else:
        raise ValueError(kind)
    return body


def _send(conn: http.client.HTTPConnection, key: str, body: dict[str, Any]) -> int:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    try:
        conn.request("POST", "/api/v1/chat/completions", json.dumps(body).encode(), headers)
        response = conn.getresponse()
        response.read()
        if response.getheader("connection", "").lower() == "close":
            conn.close()  # http.client reconnects on the next request
        return response.status
    except (OSError, http.client.HTTPException):
        conn.close()
        return 0  # no answer


def traffic(port: int, key: str, kinds: Iterable[str], rounds: int) -> dict[str, dict[str, int]]:
    """`rounds` x REQUEST_KINDS on each provider over CONNECTIONS keep-alive connections;
    answers counted by status, per provider and request kind ("0": no answer)."""
    jobs = [
        (kind, request_kind, request_body(request_kind, model_of(kind), secrets.token_hex(6)))
        for _ in range(rounds)
        for kind in kinds
        for request_kind in REQUEST_KINDS
    ]
    conns = [http.client.HTTPConnection(HOST, port, timeout=60) for _ in range(CONNECTIONS)]
    for conn in conns:  # all at once: the workers' balance board spreads them
        conn.connect()
    counts: dict[str, Counter[str]] = {}
    lock = threading.Lock()

    def drive(index: int) -> None:
        conn = conns[index]
        for kind, request_kind, body in jobs[index::CONNECTIONS]:
            status = _send(conn, key, body)
            with lock:
                counts.setdefault(kind, Counter())[f"{request_kind}:{status}"] += 1

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for conn in conns:
        conn.close()
    return {kind: dict(sorted(c.items())) for kind, c in counts.items()}


def _failed(answers: dict[str, int]) -> int:
    return sum(n for status, n in answers.items() if not status.endswith(":200"))


# --------------------------------------------------------------------------- a case


@dataclass
class Case:
    """One gateway configuration: start-up, idle and after-traffic memory."""

    name: str
    label: str
    providers: list[str]
    ready_s: float = 0.0  # spawn -> first 200 on /ready
    all_workers_s: float = 0.0  # spawn -> every worker logged its start-up
    idle: dict[str, Any] = field(default_factory=dict)
    after_traffic: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, dict[str, int]] = field(default_factory=dict)  # provider -> status counts
    failed_by_provider: dict[str, int] = field(default_factory=dict)
    traffic_s: float = 0.0
    worker_traffic_cpu_s: list[float] = field(default_factory=list)
    worker_restarts: int = 0


def _quiet(service: Service) -> None:
    wait_until("a quiet gateway", workers_settled(service), service, 60)
    time.sleep(1.0)  # the last requests' garbage and lazy work settle


def measure_case(
    name: str, *, upstream_port: int, pg: PostgresServer, redis: RedisServer,
    creds: Credentials, workdir: Path, settings: MemorySettings,
) -> Case:  # fmt: skip
    kinds = CASES[name]
    case = Case(name, CASE_LABELS[name], list(kinds))
    port = free_port()
    env = skygate_env(
        port=port, upstream_port=upstream_port, pg=pg, redis=redis, creds=creds,
        workdir=workdir, log_level="INFO", extra={},
    )  # fmt: skip
    for variable in [s.key_variable for s in PROVIDERS.values()] + [
        s.base_variable for s in PROVIDERS.values()
    ]:
        if variable:
            env.pop(variable, None)
    env |= provider_env(kinds, upstream_port) | settings.gateway_env
    service = Service(
        f"memory-{name}",
        [str(VENV_BIN / GUNICORN[0]), *GUNICORN[1:]],
        env,
        workdir / f"memory-{name}.log",
    )
    say(f"memory: starting Skygate with {case.label} on port {port}")
    service.start()
    try:
        wait_until(
            "200 on /ready",
            lambda: (http_request(port, "GET", "/ready", timeout=10) or (0,))[0] == 200,
            service,
        )
        case.ready_s = round(time.monotonic() - service.spawned_at, 3)
        wait_until(f"{WORKERS} workers", lambda: count_ready_lines(service) >= WORKERS, service)
        case.all_workers_s = round(time.monotonic() - service.spawned_at, 3)
        _quiet(service)
        case.idle = reading(service.pid)
        workers_before = {w["pid"]: _cpu_seconds(w["pid"]) for w in case.idle["workers"]}
        began = time.monotonic()
        key = creds.tenant_key or creds.admin_key
        case.answers = traffic(port, key, kinds, settings.rounds)
        case.traffic_s = round(time.monotonic() - began, 2)
        case.worker_traffic_cpu_s = [
            round(_cpu_seconds(pid) - cpu, 2) for pid, cpu in workers_before.items()
        ]
        case.failed_by_provider = {k: _failed(v) for k, v in case.answers.items()}
        _quiet(service)
        case.after_traffic = reading(service.pid)
        after = {w["pid"] for w in case.after_traffic["workers"]}
        case.worker_restarts = len(after - set(workers_before))
    finally:
        service.stop()
    idle, loaded = case.idle["total"], case.after_traffic.get("total", {})
    say(
        f"memory: {case.label}: /ready after {case.ready_s:.2f} s; PSS idle "
        f"{idle['pss_mib']:.0f} MiB, after traffic {loaded.get('pss_mib', 0):.0f} MiB "
        f"(RSS {idle['rss_mib']:.0f} / {loaded.get('rss_mib', 0):.0f}); failed answers "
        f"{case.failed_by_provider}"
    )
    return case


def measure_cases(
    *, upstream_port: int, pg: PostgresServer, redis: RedisServer, creds: Credentials,
    workdir: Path, settings: MemorySettings,
) -> dict[str, Any]:  # fmt: skip
    """Every case in turn, on servers `bench.run` (or `main`) started; the JSON-ready
    result `bench.memory_report` renders."""
    cases = [
        measure_case(
            name,
            upstream_port=upstream_port,
            pg=pg,
            redis=redis,
            creds=creds,
            workdir=workdir,
            settings=settings,
        )  # fmt: skip
        for name in settings.cases
    ]
    return {
        "rounds": settings.rounds,
        "connections": CONNECTIONS,
        "request_kinds": list(REQUEST_KINDS),
        "gateway_env": settings.gateway_env,
        "cases": [asdict(c) for c in cases],
    }


# --------------------------------------------------------------------------- alone


def _migrate(pg: PostgresServer, redis: RedisServer, creds: Credentials, workdir: Path) -> None:
    env = skygate_env(
        port=free_port(), upstream_port=1, pg=pg, redis=redis, creds=creds,
        workdir=workdir, log_level="WARNING", extra={},
    )  # fmt: skip
    done = subprocess.run(
        [str(VENV_BIN / "alembic"), "upgrade", "head"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{done.stderr}")


def bench_memory(settings: MemorySettings, *, keep_logs: bool) -> dict[str, Any]:
    """The cases on private servers (PostgreSQL, Redis, the fake upstream)."""
    from bench.run import _stop_all

    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(tempfile.gettempdir()) / "skygate-bench"
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"memory-{run_id}-", dir=base))
    say(f"work directory {workdir}")
    pg, redis = PostgresServer(workdir), RedisServer(workdir)
    complete = False
    try:
        pg.start()
        pg.create_database("bench")
        redis.start()
        creds = Credentials()
        _migrate(pg, redis, creds, workdir)
        upstream = start_upstream(0, workdir)
        result = measure_cases(
            upstream_port=int(upstream.env["PORT"]), pg=pg, redis=redis, creds=creds,
            workdir=workdir, settings=settings,
        )  # fmt: skip
        complete = True
        return {"run_id": run_id, **result}
    finally:
        _stop_all()
        redis.close()
        pg.close()
        if keep_logs or not complete:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from bench import memory_report
    from bench.run import Settings as RunSettings
    from bench.run import _raise_exit

    parser = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__.split("\n")[0]
    )
    parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    run_settings = RunSettings.from_env(compare=False, write_docs=False)
    settings = MemorySettings.from_env(run_settings.gateway_env)
    result = bench_memory(settings, keep_logs=run_settings.keep_logs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2)
    path = RESULTS / f"memory-{result['run_id']}.json"
    path.write_text(text)
    (RESULTS / "memory-latest.json").write_text(text)
    say(f"results: {path.relative_to(ROOT)}")
    print()
    print(memory_report.console_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
