"""A client that goes away cancels the upstream call within 2 s — through a real
server socket (the gateway process) and a real upstream (the fake, in a thread)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.fake_upstream import FakeUpstream, run_in_thread
from tests.support.gateway import GatewayProcess
from tests.support.llm import router_yaml

pytestmark = pytest.mark.slow


@pytest.fixture
def threaded_upstream() -> Iterator[FakeUpstream]:
    server, stop = run_in_thread()
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def gateway(
    threaded_upstream: FakeUpstream, tmp_path: Path, sqlite_url: str
) -> Iterator[GatewayProcess]:
    config = tmp_path / "router.yaml"
    config.write_text(router_yaml(threaded_upstream, timeout=30))
    process = GatewayProcess(
        {"DATABASE_URL": sqlite_url, "ROUTER_CONFIG": str(config), "FAKE_ANTHROPIC_KEY": "k"},
        tmp_path / "gateway.log",
        kind="embedded",
    )
    try:
        yield process.start()
    finally:
        process.stop()


def wait_for_cancel(upstream: FakeUpstream, before: int, within: float = 2.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        if upstream.cancelled > before:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"upstream call not cancelled within {within}s")


def test_disconnect_cancels_a_non_streaming_upstream_call(
    gateway: GatewayProcess, threaded_upstream: FakeUpstream
) -> None:
    threaded_upstream.set_behaviour("solo-1", "hang")
    before = threaded_upstream.cancelled
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gateway.base_url}/api/v1/chat/completions",
            timeout=0.5,
            json={"model": "solo", "messages": [{"role": "user", "content": "wait forever"}]},
        )
    wait_for_cancel(threaded_upstream, before)
    assert threaded_upstream.in_flight == 0


def test_disconnect_cancels_a_stream(
    gateway: GatewayProcess, threaded_upstream: FakeUpstream
) -> None:
    threaded_upstream.set_behaviour("solo-1", "slow", chunk_delay_ms=1000)
    before = threaded_upstream.cancelled
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/api/v1/chat/completions",
        timeout=10,
        json={
            "model": "solo",
            "stream": True,
            "messages": [{"role": "user", "content": "a long slow answer with many words"}],
        },
    ) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    # leaving the block closes the connection mid-stream
    wait_for_cancel(threaded_upstream, before)
