"""Connections spread evenly over gunicorn's workers (core/serving/balance.py): the
shared-memory board on its own, then real gunicorn with two workers and a burst
of keep-alive connections, as a load balancer's or an SDK's pool opens them."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import time
from pathlib import Path

import httpx
import pytest

from core.serving.balance import ConnectionBoard
from tests.support.gateway import GatewayProcess


def test_board_defers_the_busier_worker_only() -> None:
    board = ConnectionBoard(slots=4)
    a = board.claim(set())
    b = board.claim({a})
    assert b != a
    assert not board.over_share(a), "a slot whose worker has not started yet is skipped"
    board.join(a, 101)
    board.join(b, 102)
    board.publish(a, 3)
    board.publish(b, 2)
    assert board.over_share(a)
    assert not board.over_share(b)
    board.publish(b, 3)
    assert not board.over_share(a), "equal shares: both accept"
    board.release(b)
    board.publish(a, 9)
    assert not board.over_share(a), "a freed slot is not a worker to defer to"
    board.join(b, 102)
    assert board.over_share(a)
    board.leave(b)
    assert not board.over_share(a), "nor is a worker that stopped accepting (recycling)"


def test_board_slots_are_claimed_once_and_reused_after_release() -> None:
    board = ConnectionBoard(slots=2)
    a = board.claim(set())
    b = board.claim({a})
    with pytest.raises(RuntimeError):
        board.claim({a, b})
    board.join(b, 102)
    board.publish(b, 5)
    board.release(b)
    again = board.claim({a})
    assert again == b
    assert board.connections(again) == 0, "a reused slot starts empty"


def _publish_in_child(board: ConnectionBoard, slot: int) -> None:
    board.join(slot, multiprocessing.current_process().pid or 0)
    board.publish(slot, 7)


def test_board_is_shared_with_forked_workers() -> None:
    board = ConnectionBoard(slots=2)
    slot = board.claim(set())
    child = multiprocessing.get_context("fork").Process(
        target=_publish_in_child, args=(board, slot)
    )
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert board.connections(slot) == 7


def worker_connections(metrics_text: str) -> dict[str, float]:
    found = re.findall(r'^skygate_worker_connections\{pid="(\d+)"\} (\S+)$', metrics_text, re.M)
    return {pid: float(value) for pid, value in found}


async def open_keepalive_burst(port: int, count: int) -> list[asyncio.StreamWriter]:
    """`count` connections opened at once, each answering one request and kept open."""
    pairs = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", port) for _ in range(count))
    )
    for _, writer in pairs:
        writer.write(b"GET /live HTTP/1.1\r\nHost: skygate\r\n\r\n")
    for reader, _ in pairs:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
    return [writer for _, writer in pairs]


@pytest.mark.slow
def test_a_burst_of_keepalive_connections_is_spread_over_both_workers(
    tmp_path: Path, sqlite_url: str
) -> None:
    gateway = GatewayProcess(
        {
            "DATABASE_URL": sqlite_url,
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        },
        tmp_path / "gunicorn.log",
    )
    try:
        gateway.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # until both workers accept (series at 0)
            scrape = httpx.get(f"{gateway.base_url}/metrics", timeout=5).text
            if len(worker_connections(scrape)) == 2:
                break
            time.sleep(0.1)
        workers = {str(pid) for pid in gateway.worker_pids()}
        assert len(workers) == 2

        async def quiet() -> None:
            """Until the workers have seen the last burst's connections close."""
            for _ in range(100):
                async with httpx.AsyncClient() as client:
                    text = (await client.get(f"{gateway.base_url}/metrics")).text
                if sum(worker_connections(text).values()) <= 1:  # the scrape's own
                    return
                await asyncio.sleep(0.05)

        async def burst_then_scrape() -> dict[str, float]:
            writers = await open_keepalive_burst(gateway.port, 16)
            try:
                async with httpx.AsyncClient() as client:  # a 17th connection
                    text = (await client.get(f"{gateway.base_url}/metrics")).text
                return worker_connections(text)
            finally:
                for writer in writers:
                    writer.close()
                await quiet()

        async def bursts() -> list[list[float]]:
            for writer in await open_keepalive_burst(gateway.port, 16):  # first requests
                writer.close()  # (a fresh worker's first request is slow: lazy imports)
            await quiet()
            seen = []
            for _ in range(3):
                held = await burst_then_scrape()
                assert set(held) >= workers, held
                counts = sorted(held[pid] for pid in workers)
                assert sum(counts) == 17, held  # every connection is counted, the scrape's too
                seen.append(counts)
                if counts[0] >= 4:
                    break
            return seen

        # Without the board the worker that wakes first keeps nearly all 17, burst after
        # burst. With it the split is even on an idle machine; on a loaded one a worker
        # that is not scheduled within DEFER_SECONDS loses its turn (CI saw 12/5 and 14/3),
        # so one of three bursts must show the spread.
        seen = asyncio.run(bursts())
        assert seen[-1][0] >= 4, f"no burst was spread over both workers: {seen}"
    finally:
        gateway.stop()


REQUESTS = 900


@pytest.mark.slow
def test_recycling_workers_under_keepalive_load_drop_nothing_and_stall_no_one(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Workers recycle every few hundred requests while 32 keep-alive clients
    hammer them: every request is answered, and none waits long for a worker."""
    gateway = GatewayProcess(
        {
            "DATABASE_URL": sqlite_url,
            "WEB_CONCURRENCY": "2",
            "MAX_REQUESTS": "300",
            "MAX_REQUESTS_JITTER": "0",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        },
        tmp_path / "gunicorn.log",
    )
    try:
        gateway.start()
        first = set(gateway.worker_pids())

        async def load() -> tuple[int, int, float]:
            ok = failed = 0
            slowest = 0.0
            limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
            async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits) as client:

                async def one_client() -> None:
                    nonlocal ok, failed, slowest
                    # Enough requests for both workers to recycle (2 x 300) and a third
                    # worker to take over, whatever this machine's speed; bounded in time.
                    stop = time.monotonic() + 20
                    while ok + failed < REQUESTS and time.monotonic() < stop:
                        started = time.monotonic()
                        try:
                            response = await client.get("/live", timeout=10)
                            ok += response.status_code == 200
                            failed += response.status_code != 200
                        except httpx.HTTPError:
                            failed += 1
                        slowest = max(slowest, time.monotonic() - started)

                await asyncio.gather(*(one_client() for _ in range(32)))
            return ok, failed, slowest

        ok, failed, slowest = asyncio.run(load())
        recycled = first - set(gateway.worker_pids())
        assert recycled, "the workers recycled during the load"
        assert failed == 0 and ok >= REQUESTS, (ok, failed)
        # A booting worker takes most of a core for ~0.7-1 s on this 2-core machine and
        # three boot during the load (up to 2.8 s seen for one request, on 041514a too);
        # what this bounds is a worker deferring to one that stopped accepting (a stall
        # until the client's 10 s timeout).
        assert slowest < 5.0, f"a request waited {slowest:.2f} s"
    finally:
        gateway.stop()
