"""The WebSocket benchmark: what `/ws/agents` costs and how fast run events arrive (issue #13).

    python -m bench.ws              # `make bench` runs it after `bench.jobs`
    python -m bench.ws --no-docs    # bench/results/ws-*.json only

One run starts a private PostgreSQL and Redis, the fake upstream, and Skygate instance A
under gunicorn with 2 workers in the production setup (`bench.run.start_skygate`). Then:

1. memory: PSS and RSS of A's master and workers before, with `connections` idle
   sessions open (authenticated with `Authorization: Bearer <tenant key>`, each past
   its `session.created`), after they closed, and after a second round. The clients are
   another process (`bench.ws_clients`), so their memory is not the gateway's;
2. same instance: a client creates runs (`run.create`) of an agent whose model is the
   fake upstream's `script` of `chunks` text pieces `chunk_delay_ms` apart, and takes
   arrival minus `ts` (when the engine emitted it, epoch s) of every event;
3. across instances: a second instance B (another gunicorn, same database and Redis); a
   client on A creates each run, one on B `run.subscribe`s to it from seq 0 and times
   every event emitted after its subscription was acknowledged (earlier ones are
   replays, counted apart). Every client checks each seq arrives exactly once.

One machine, so one clock. `other_cores`: CPU the machine spent during a phase outside
this benchmark's process tree (noise). The tenant's connection cap
(WS_MAX_CONNECTIONS_PER_TENANT) is raised above `connections`; nothing else changes.
Results: ``bench/results/ws-<stamp>.json`` and ``ws-latest.json``; the "WebSocket" section
of docs/PERFORMANCE.md (`bench.ws_report`).

Settings (environment): BENCH_WS_CONNECTIONS (1000), BENCH_WS_RUNS (10 per latency phase),
BENCH_WS_CHUNKS (200), BENCH_WS_CHUNK_DELAY_MS (5), BENCH_KEEP_LOGS; BENCH_GATEWAY_ENV as in
`bench.run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procstat, ws_report
from bench.jobs import redis_get
from bench.run import (
    HOST,
    MODEL,
    RESULTS,
    ROOT,
    TENANT_KEY_REQUEST,
    VENV_BIN,
    Credentials,
    Service,
    Target,
    http_request,
    machine_info,
    postmaster_pid,
    say,
    skygate_env,
    start_skygate,
    start_upstream,
    wait_until,
    workers_settled,
)
from bench.run import Settings as HttpSettings
from bench.run import _raise_exit as raise_exit
from bench.run import _stop_all as stop_all
from bench.ws_clients import AGENT, Events, cross_instance, raise_fd_limit, same_instance
from tests.support.servers import PostgresServer, RedisServer, free_port

COUNTER = "skygate:ws:connections:" + str(TENANT_KEY_REQUEST["tenant"])  # api/ws/agents.py
WARMUP_SESSIONS = 20
FIRST_TOKEN_MS = 100  # the upstream's wait before a run's text: B has subscribed by then


@dataclass(frozen=True)
class WsSettings:
    connections: int = 1000
    runs: int = 10
    chunks: int = 200
    chunk_delay_ms: float = 5.0
    open_concurrency: int = 50
    keep_logs: bool = False

    @classmethod
    def from_env(cls) -> WsSettings:
        env = os.environ.get
        return cls(
            connections=max(1, int(env("BENCH_WS_CONNECTIONS", "1000"))),
            runs=max(1, int(env("BENCH_WS_RUNS", "10"))),
            chunks=max(1, int(env("BENCH_WS_CHUNKS", "200"))),
            chunk_delay_ms=float(env("BENCH_WS_CHUNK_DELAY_MS", "5")),
            keep_logs=env("BENCH_KEEP_LOGS", "0") == "1",
        )


@dataclass
class WsRun:
    run_id: str
    started: str
    settings: dict[str, Any]
    machine: dict[str, Any]
    memory: dict[str, Any] = field(default_factory=dict)
    same_instance: dict[str, Any] = field(default_factory=dict)
    cross_instance: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    complete: bool = False


class Noise:
    """CPU the machine spends outside this benchmark's process tree, from now on: the
    bench, everything it started (gateways, upstream, Redis, clients) and PostgreSQL."""

    def __init__(self, pg: PostgresServer) -> None:
        self.roots = [os.getpid(), *(pid for pid in [postmaster_pid(pg)] if pid)]
        self.busy, self.own = procstat.machine_busy_seconds(), self._own()
        self.began = time.monotonic()

    def _own(self) -> float:
        return procstat.snapshot(self.roots, pss=False).cpu_seconds

    def cores(self) -> float:
        elapsed = max(time.monotonic() - self.began, 1e-3)
        other = procstat.machine_busy_seconds() - self.busy - (self._own() - self.own)
        return round(max(other, 0.0) / elapsed, 3)


# --------------------------------------------------------------------------- phases


def _settle(service: Service) -> None:
    wait_until("a quiet gateway", workers_settled(service), service)


def _reading(snap: procstat.TreeSnapshot) -> dict[str, float]:
    return {"pss_mib": round(snap.pss_mib, 2), "rss_mib": round(snap.rss_mib, 2)}


def _per_process(tree: list[int]) -> dict[int, float]:
    """PSS (MiB) of each process of the tree: which worker took the sessions."""
    result = {}
    for pid in procstat.snapshot(tree, pss=False).pids:
        with contextlib.suppress(OSError, ValueError):
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            kib = re.search(r"^Pss:\s+(\d+)", rollup, re.MULTILINE)
            result[pid] = int(kib.group(1)) / 1024 if kib else 0.0
    return result


@contextlib.contextmanager
def idle_sessions(target: Target, n: int, concurrency: int, workdir: Path) -> Iterator[float]:
    """`n` idle sessions on `target`, held by `bench.ws_clients` while in the block
    (yields the seconds they took to open); closed, and their process gone, after it."""
    url = f"ws://{HOST}:{target.port}/ws/agents"
    argv = [str(VENV_BIN / "python"), "-m", "bench.ws_clients", url, str(n), str(concurrency)]
    log_path = workdir / "idle-clients.log"
    with (
        log_path.open("ab") as log,
        subprocess.Popen(
            argv,
            cwd=ROOT,
            env=os.environ | {"BENCH_WS_KEY": target.key},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        ) as clients,
    ):
        assert clients.stdin is not None and clients.stdout is not None
        try:
            line = clients.stdout.readline()
            if not line.startswith("OPEN "):
                tail = log_path.read_text()[-3000:]
                raise RuntimeError(f"the idle clients failed: {line!r}\n{tail}")
            yield float(line.split()[2])
            clients.stdin.write("close\n")
            clients.stdin.flush()
            if clients.stdout.readline().strip() != "CLOSED":
                raise RuntimeError("the idle clients did not close their sockets")
            clients.wait(30)
        finally:
            if clients.poll() is None:
                clients.kill()


def measure_memory(
    target: Target, settings: WsSettings, redis_port: int, workdir: Path, pg: PostgresServer
) -> dict[str, Any]:
    """PSS/RSS of the gateway's tree around `connections` idle sessions. A few sessions
    are opened and closed first, so one-time costs (lazy imports, first allocations)
    are not counted per session; a second round after the first closed tells memory
    the allocator kept for reuse (flat) from a leak (it grows again)."""
    tree, n, gate = [target.service.pid], settings.connections, settings.open_concurrency

    def quiet_after_closing() -> procstat.TreeSnapshot:
        ended = lambda: redis_get(redis_port, COUNTER) == 0  # noqa: E731
        wait_until("every session ended", ended, target.service, 60)
        _settle(target.service)
        return procstat.snapshot(tree)

    with idle_sessions(target, min(n, WARMUP_SESSIONS), gate, workdir):
        pass
    before, per_before = quiet_after_closing(), _per_process(tree)
    noise = Noise(pg)
    with idle_sessions(target, n, gate, workdir) as open_seconds:
        counted = redis_get(redis_port, COUNTER)
        _settle(target.service)
        opened, per_opened = procstat.snapshot(tree), _per_process(tree)
    closed = quiet_after_closing()
    with idle_sessions(target, n, gate, workdir):  # again: is what closing kept reused?
        pass
    again = quiet_after_closing()
    added_pss, added_rss = opened.pss_mib - before.pss_mib, opened.rss_mib - before.rss_mib
    return {
        "connections": n,
        "open_seconds": open_seconds,
        "sessions_counted": counted,
        "before": _reading(before),
        "open": _reading(opened),
        "closed": _reading(closed),
        "added_pss_mib": round(added_pss, 2),
        "added_rss_mib": round(added_rss, 2),
        "pss_kib_per_connection": round(added_pss * 1024 / n, 2),
        "rss_kib_per_connection": round(added_rss * 1024 / n, 2),
        "retained_pss_mib": round(closed.pss_mib - before.pss_mib, 2),
        "second_round_closed": _reading(again),
        "second_round_growth_pss_mib": round(again.pss_mib - closed.pss_mib, 2),
        "pss_added_by_process_mib": {
            str(pid): round(mib - per_before.get(pid, 0.0), 2) for pid, mib in per_opened.items()
        },
        "other_cores": noise.cores(),
    }


LatencyClient = Callable[..., Coroutine[Any, Any, None]]


def _latency_phase(
    pg: PostgresServer, runs: int, client: LatencyClient, *urls_and_key: str
) -> dict[str, Any]:
    events, noise, began = Events(), Noise(pg), time.monotonic()
    asyncio.run(client(*urls_and_key, runs, events))
    return events.summary(runs, time.monotonic() - began, noise.cores())


def prepare_agent(port: int, creds: Credentials, upstream: Service, s: WsSettings) -> None:
    """A shared agent on the bench model, whose every answer is `chunks` text pieces."""
    text = " ".join(f"w{i}" for i in range(s.chunks))
    script = {"model": MODEL, "mode": "script", "turns": [{"content": text}],
              "chunk_delay_ms": s.chunk_delay_ms, "delay_ms": FIRST_TOKEN_MS}  # fmt: skip
    agent = {"id": AGENT, "name": "WebSocket benchmark", "model": MODEL}
    admin = {"Content-Type": "application/json", "Authorization": f"Bearer {creds.admin_key}"}
    for at, path, body, want in ((int(upstream.env["PORT"]), "/_control/behaviour", script, 200),
                                 (port, "/api/v1/agents", agent, 201)):  # fmt: skip
        answer = http_request(at, "POST", path, json.dumps(body).encode(), admin)
        if answer is None or answer[0] != want:
            raise RuntimeError(f"POST {path} failed: {answer!r}")


# --------------------------------------------------------------------------- the run


def run(
    settings: WsSettings,
    *,
    pg: PostgresServer,
    redis: RedisServer,
    workdir: Path,
    database: str = "bench_ws",
    run_id: str | None = None,
) -> WsRun:
    """Every phase on servers the caller owns; the gateways and the upstream are
    started and stopped here."""
    run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    http = HttpSettings.from_env(compare=False, write_docs=False)
    database_url = pg.create_database(database).replace("postgresql+asyncpg://", "postgresql://")
    cap = str(max(settings.connections + 100, 200))
    extra = http.gateway_env | {"DATABASE_URL": database_url, "WS_MAX_CONNECTIONS_PER_TENANT": cap}
    http = dataclasses.replace(http, gateway_env=extra)
    result = WsRun(
        run_id,
        datetime.now(UTC).isoformat(timespec="seconds"),
        asdict(settings),
        machine_info(http),
    )
    began, creds = time.monotonic(), Credentials()
    started: list[Service] = []
    try:
        env = skygate_env(
            port=free_port(),
            upstream_port=1,
            pg=pg,
            redis=redis,
            creds=creds,
            workdir=workdir,
            log_level="WARNING",
            extra=extra,
        )
        migrated = subprocess.run(
            [str(VENV_BIN / "alembic"), "upgrade", "head"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if migrated.returncode != 0:
            raise RuntimeError(f"alembic upgrade head failed:\n{migrated.stderr}")
        upstream = start_upstream(0, workdir)
        started.append(upstream)
        a = start_skygate("skygate-ws-a", "Skygate A", 0, upstream, pg, redis, creds, workdir, http)
        started.append(a.service)
        say(f"opening {settings.connections} idle sessions on A")
        result.memory = m = measure_memory(a, settings, redis.port, workdir, pg)
        say(
            f"  +{m['added_pss_mib']} MiB PSS ({m['pss_kib_per_connection']} KiB each), "
            f"+{m['added_rss_mib']} MiB RSS; {m['retained_pss_mib']} MiB kept after closing"
        )
        prepare_agent(a.port, creds, upstream, settings)
        url_a = f"ws://{HOST}:{a.port}/ws/agents"
        result.same_instance = _latency_phase(pg, settings.runs, same_instance, url_a, a.key)
        say(f"  same instance: {ws_report.latency_line(result.same_instance)}")
        b = start_skygate("skygate-ws-b", "Skygate B", 0, upstream, pg, redis, creds, workdir, http)
        started.append(b.service)
        url_b = f"ws://{HOST}:{b.port}/ws/agents"
        result.cross_instance = _latency_phase(
            pg, settings.runs, cross_instance, url_a, url_b, a.key
        )
        say(f"  across instances: {ws_report.latency_line(result.cross_instance)}")
        result.complete = True
    finally:
        for service in reversed(started):
            service.stop()
        stop_all()
        result.elapsed_s = round(time.monotonic() - began, 1)
    return result


def bench_ws(settings: WsSettings) -> WsRun:
    """The whole run on private servers (`make bench`)."""
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = Path(tempfile.gettempdir()) / "skygate-bench"
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"ws-{run_id}-", dir=base))
    say(f"work directory {workdir}")
    pg, redis = PostgresServer(workdir), RedisServer(workdir)
    complete = False
    try:
        pg.start()
        redis.start()
        say(f"PostgreSQL on {pg.port}, Redis on {redis.port}")
        result = run(settings, pg=pg, redis=redis, workdir=workdir, run_id=run_id)
        complete = result.complete
        return result
    finally:
        stop_all()
        redis.close()
        pg.close()
        if settings.keep_logs or not complete:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def save(result: WsRun) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(result), indent=2)
    path = RESULTS / f"ws-{result.run_id}.json"
    path.write_text(text)
    (RESULTS / "ws-latest.json").write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ws", description=__doc__.split("\n")[0])
    parser.add_argument("--no-docs", action="store_true", help="write bench/results only")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, raise_exit)
    signal.signal(signal.SIGHUP, raise_exit)
    settings = WsSettings.from_env()
    raise_fd_limit(settings.connections)  # the gateways inherit it: one fd per session
    result = bench_ws(settings)
    path = save(result)
    say(f"results: {path.relative_to(ROOT)} (elapsed {result.elapsed_s:.0f} s)")
    data = json.loads(path.read_text())
    if not args.no_docs and result.complete:
        say(f"wrote {ws_report.update_docs(data, ROOT / 'docs').relative_to(ROOT)}")
    print()
    print(ws_report.console_summary(data))
    return 0  # as bench.run: a FAIL is a finding in the report, not a failed run


if __name__ == "__main__":
    sys.exit(main())
