"""Real gunicorn with two uvicorn workers: metrics summed across workers and
worker recycling, the readiness drain on SIGTERM, and the two database paths."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import ROOT, GatewayProcess
from tests.support.servers import PostgresServer

METRICS_TOKEN = "metrics-token-for-serving-tests"  # /health's details need it
OPERATOR = {"Authorization": f"Bearer {METRICS_TOKEN}"}

pytestmark = pytest.mark.slow


def migrate(url: str) -> None:
    alembic = Path(sys.executable).parent / "alembic"
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url}
    subprocess.run(
        [str(alembic), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


def counter(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = line[len(name) + 1 : line.index("}")]
            parts = ",".join(sorted(got.split(",")))
            if parts == want:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/gateway.db"
    migrate(url)
    return url


def test_metrics_are_summed_across_workers_and_survive_recycling(
    tmp_path: Path, sqlite_db: str
) -> None:
    gateway = GatewayProcess(
        {
            "DATABASE_URL": sqlite_db,
            "WEB_CONCURRENCY": "2",
            "MAX_REQUESTS": "25",
            "MAX_REQUESTS_JITTER": "0",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        },
        tmp_path / "gunicorn.log",
    )
    try:
        gateway.start()
        first_workers = set(gateway.worker_pids())
        assert len(first_workers) == 2
        text = httpx.get(f"{gateway.base_url}/metrics", timeout=5).text
        baseline = counter(
            text, "http_requests_total", method="GET", route="/live", status="200", error_type=""
        )
        seen: list[float] = []
        sent = 0
        for _round in range(4):
            for _ in range(30):
                # a new connection each time, so both workers serve and recycle
                assert httpx.get(f"{gateway.base_url}/live", timeout=5).status_code == 200
                sent += 1
            text = httpx.get(f"{gateway.base_url}/metrics", timeout=5).text
            seen.append(
                counter(
                    text,
                    "http_requests_total",
                    method="GET",
                    route="/live",
                    status="200",
                    error_type="",
                )
            )
        assert seen == sorted(seen), f"a counter went down: {seen}"
        assert seen[-1] == baseline + sent
        assert not first_workers & set(gateway.worker_pids()), "workers were not recycled"

        # Keep-alive clients, several at once, while workers keep recycling: a
        # stopping worker answers with Connection: close and drops nothing.
        def client_session(_: int) -> list[tuple[int, str]]:
            with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
                answers = []
                for _ in range(60):  # paced, so the run spans several recycles
                    answers.append(client.get("/live"))
                    time.sleep(0.025)
                return [(r.status_code, r.headers.get("connection", "")) for r in answers]

        with ThreadPoolExecutor(4) as pool:
            answers = [a for batch in pool.map(client_session, range(4)) for a in batch]
        assert [status for status, _ in answers] == [200] * 240
        # the recycling workers told their keep-alive clients to reconnect elsewhere
        assert any(connection == "close" for _, connection in answers)
        text = httpx.get(f"{gateway.base_url}/metrics", timeout=5).text
        roles = re.findall(r'process_resident_memory_bytes\{pid="\d+",role="(\w+)"\}', text)
        assert sorted(roles) == ["master", "worker", "worker"]
        assert "http_requests_in_progress" in text
        # The master imports the app before forking (gunicorn.conf.py `when_ready`): the
        # metric values that import creates are not the master's series (a live master
        # would export a connection count, and pull `livemin` gauges to 0).
        assert gateway.proc is not None
        pids = re.findall(r'skygate_worker_connections\{pid="(\d+)"\}', text)
        assert pids and str(gateway.proc.pid) not in pids
    finally:
        gateway.stop()


def test_sigterm_drains_readiness_then_exits_cleanly(tmp_path: Path, sqlite_db: str) -> None:
    gateway = GatewayProcess(
        {
            "DATABASE_URL": sqlite_db,
            "WEB_CONCURRENCY": "2",
            "SHUTDOWN_DRAIN_SECONDS": "3",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        },
        tmp_path / "gunicorn.log",
    )
    try:
        gateway.start()
        assert httpx.get(f"{gateway.base_url}/ready", timeout=5).status_code == 200
        gateway.signal(signal.SIGTERM)
        time.sleep(0.5)
        for _ in range(4):  # both workers are draining: each answers 503 on /ready
            ready = httpx.get(f"{gateway.base_url}/ready", timeout=5)
            assert ready.status_code == 503
            assert ready.json()["reasons"] == ["shutting down"]
            assert httpx.get(f"{gateway.base_url}/live", timeout=5).status_code == 200
        assert gateway.proc is not None
        assert gateway.proc.wait(timeout=20) == 0
    finally:
        gateway.stop()


def test_embedded_sqlite_path_migrates_and_serves(tmp_path: Path, sqlite_db: str) -> None:
    gateway = GatewayProcess(
        {"DATABASE_URL": sqlite_db, "METRICS_TOKEN": METRICS_TOKEN},
        tmp_path / "embedded.log",
        kind="embedded",
    )
    try:
        gateway.start()
        assert httpx.get(f"{gateway.base_url}/ready", timeout=5).json() == {"ready": True}
        health = httpx.get(f"{gateway.base_url}/health", headers=OPERATOR, timeout=5).json()
        assert health["services"]["database"]["backend"] == "sqlite"
    finally:
        gateway.stop()


def test_postgres_path_migrates_and_serves_under_gunicorn(
    tmp_path: Path, postgres_url: str
) -> None:
    # Render hands out postgres:// URLs; the gateway and Alembic must accept them.
    render_style = postgres_url.replace("postgresql+asyncpg://", "postgres://")
    migrate(render_style)
    gateway = GatewayProcess(
        {
            "DATABASE_URL": render_style,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
            "METRICS_TOKEN": METRICS_TOKEN,
        },
        tmp_path / "gunicorn.log",
    )
    try:
        gateway.start()
        assert httpx.get(f"{gateway.base_url}/ready", timeout=5).json() == {"ready": True}
        health = httpx.get(f"{gateway.base_url}/health", headers=OPERATOR, timeout=5).json()
        assert health["services"]["database"]["backend"] == "postgresql"
    finally:
        gateway.stop()


CANARIES = {
    "ADMIN_API_KEY": "canary-admin-7f3a9c1e5b",
    "JWT_SECRET_KEY": "canary-jwt-secret-0123456789abcdef0123456789",
    "ENCRYPTION_MASTER_KEY": "canary-master-key-5e8d2a",
}


def test_no_secret_reaches_logs_metrics_or_errors(
    tmp_path: Path, postgres_server: PostgresServer, postgres_url: str
) -> None:
    db_password = "canary-db-password-41c7"
    url = postgres_url.replace("postgres@", f"postgres:{db_password}@")  # trust auth ignores it
    migrate(url)
    bearer = "sk-canary-bearer-token-9d1f0a"
    api_key = "sk-canary-x-api-key-2b6e8c"
    cookie = "canary-cookie-value-77aa"
    gateway = GatewayProcess(
        {
            "DATABASE_URL": url,
            "LOG_LEVEL": "DEBUG",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
            **CANARIES,
        },
        tmp_path / "gunicorn.log",
    )
    bodies = []
    try:
        gateway.start()
        headers = {
            "Authorization": f"Bearer {bearer}",
            "X-API-Key": api_key,
            "Cookie": f"session={cookie}",
        }
        for path in ("/", "/health", "/nope?api_key=" + api_key, "/api/v1/chat/completions"):
            bodies.append(httpx.get(gateway.base_url + path, headers=headers, timeout=5).text)
        bodies.append(
            httpx.post(
                gateway.base_url + "/api/v1/chat/completions",
                headers=headers,
                content=b"{bad json " + api_key.encode(),
                timeout=5,
            ).text
        )
        bodies.append(httpx.get(gateway.base_url + "/metrics", timeout=5).text)
        admin = {"Authorization": f"Bearer {CANARIES['ADMIN_API_KEY']}"}
        created = httpx.post(
            gateway.base_url + "/api/v1/keys",
            headers=admin,
            timeout=5,
            json={"name": "canary", "tenant": "canary-team"},
        ).json()
        tenant_key = created["key"]
        token = httpx.post(
            gateway.base_url + "/api/v1/auth/token",
            timeout=5,
            headers={"Authorization": f"Bearer {tenant_key}"},
        ).json()["access_token"]
        for credential in (tenant_key, token, tenant_key[:-1] + "x"):
            bodies.append(
                httpx.post(
                    gateway.base_url + "/api/v1/chat/completions",
                    timeout=5,
                    headers={"Authorization": f"Bearer {credential}"},
                    json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
                ).text
            )
        bodies.append(httpx.get(gateway.base_url + "/metrics", timeout=5).text)
    finally:
        gateway.stop()
    logs = gateway.logs()
    for secret in (tenant_key, token, tenant_key[:-1] + "x"):
        assert secret not in logs and secret not in "\n".join(bodies)
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line["level"] == "debug" for line in lines)  # debug logging was really on
    assert any(line["event"] == "request" for line in lines)
    everything = logs + "\n".join(bodies)
    for secret in [*CANARIES.values(), db_password, bearer, api_key, cookie]:
        assert secret not in everything, f"secret leaked: {secret[:12]}…"
