"""Agent runs under gunicorn with two workers over PostgreSQL: a run started on one
worker is read, followed and cancelled through whichever worker a request lands on."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream, run_in_thread
from tests.support.gateway import GatewayProcess
from tests.support.llm import router_yaml

AGENTS = textwrap.dedent("""\
    agents:
      - id: slow
        name: Slow
        model: solo
        tools: [calculator]
      - id: quick
        name: Quick
        model: solo
        tools: [calculator]
    """)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    upstream, stop = run_in_thread()
    try:
        yield upstream
    finally:
        stop()


@pytest.fixture
def gateway(
    fake: FakeUpstream, migrated_postgres_url: str, redis_url: str, tmp_path: Path
) -> Iterator[GatewayProcess]:
    (tmp_path / "router.yaml").write_text(router_yaml(fake, timeout=30))
    (tmp_path / "agents.yaml").write_text(AGENTS)
    process = GatewayProcess(
        {
            "DATABASE_URL": migrated_postgres_url,
            "REDIS_URL": redis_url,
            "ROUTER_CONFIG": str(tmp_path / "router.yaml"),
            "AGENTS_CONFIG": str(tmp_path / "agents.yaml"),
            "WEB_CONCURRENCY": "2",
            "JOBS_IN_PROCESS": "true",
            "RATE_LIMIT_PER_MINUTE": "100000",
            "RATE_LIMIT_PER_HOUR": "1000000",
            "FAKE_ANTHROPIC_KEY": "unused",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        },
        tmp_path / "gunicorn.log",
    )
    try:
        process.start(timeout=60)
        yield process
    finally:
        process.stop()


def fresh(gateway: GatewayProcess) -> httpx.Client:
    """A client whose every request is a new connection (so requests spread over
    both workers, as a load balancer's would)."""
    return httpx.Client(
        base_url=gateway.base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    )


def wait_for(
    client: httpx.Client, run_id: str, statuses: set[str], timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        assert "status" in run, run
        if run["status"] in statuses:
            return dict(run)
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {statuses}: {run}")


def test_runs_are_served_and_cancelled_across_gunicorn_workers(
    gateway: GatewayProcess, fake: FakeUpstream
) -> None:
    fake.set_behaviour(
        "solo-1",
        "script",
        turns=[
            {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
            {"content": "forty-two " * 40},
        ],
        chunk_delay_ms=150,
    )
    with fresh(gateway) as client:
        quick = client.post(
            "/api/v1/agents/quick/runs", json={"input": "go", "background": True}
        ).json()
        done = wait_for(client, quick["id"], {"completed"})
        assert done["usage"]["tool_calls"] == 1 and done["output"].startswith("forty-two")
        replay = client.get(f"/api/v1/runs/{quick['id']}/events").text
        seqs = [int(line[4:]) for line in replay.splitlines() if line.startswith("id: ")]
        assert seqs == list(range(1, done["last_seq"] + 1))

        slow = client.post(  # another question: not answered from the cache
            "/api/v1/agents/slow/runs", json={"input": "go slowly", "background": True}
        )
        run_id = slow.json()["id"]
        wait_for(client, run_id, {"in_progress"})
        for _ in range(4):  # new connections: the cancels land on either worker
            answer = client.post(f"/api/v1/runs/{run_id}/cancel", json={"mode": "immediate"})
            assert answer.status_code == 200
        cancelled = wait_for(client, run_id, {"cancelled"}, timeout=10)
    assert cancelled["stop_reason"] == "cancelled"
    assert "unhandled_exception" not in gateway.logs()
