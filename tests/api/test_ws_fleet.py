"""`/ws/agents` across a fleet: two real gunicorn instances (one worker each, on
different ports) sharing one PostgreSQL, one Redis and one fake upstream, as two
instances behind a load balancer would. A client that loses its socket, or whose
instance drains for a deploy, resumes on the other instance from its last seq and
gets every remaining event once, in order; with Redis stopped mid-run the socket
that started the run still streams it and a follower elsewhere reads it late from
the database (or is told, retryably, to subscribe again), never a crash or a hang.

One worker per instance keeps the two slow shared cores free for the runs and makes
"the other instance" unambiguous; the cross-worker paths are the same code."""

from __future__ import annotations

import asyncio
import json
import signal
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench.fake_upstream import FakeUpstream, run_in_thread
from database.schema import upgrade_head
from tests.support.gateway import GatewayProcess
from tests.support.llm import router_yaml
from tests.support.servers import PostgresServer, RedisServer

pytestmark = pytest.mark.slow

AGENTS = textwrap.dedent("""\
    agents:
      - id: talker
        name: Talker
        model: solo
    """)
CHUNKS = 200  # words of the answer, one stream chunk each
CHUNK_DELAY_MS = 20  # so a run streams for about 4 s
WAIT = 30.0  # seconds: the bound on any wait for a frame
TERMINAL = ("run.completed", "run.incomplete", "run.failed", "run.cancelled")
Frame = dict[str, Any]
PROTOCOL = Subprotocol("skygate.agents.v1")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    upstream, stop = run_in_thread()
    try:
        upstream.set_behaviour(
            "solo-1",
            "script",
            turns=[{"content": "word " * CHUNKS}],
            chunk_delay_ms=CHUNK_DELAY_MS,
        )
        yield upstream
    finally:
        stop()


class Fleet:
    """Two instances, `a` and `b`, of the same deployment. Booting them is most of
    this file's time, so the module shares them and `repair` undoes what a test did
    (an instance stopped, Redis stopped) before the next one."""

    def __init__(self, env: dict[str, str], root: Path) -> None:
        self.env, self.root = env, root
        self.a, self.b = self._instance("a"), self._instance("b")

    def _instance(self, name: str) -> GatewayProcess:
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.root / f"prom-{name}")}
        return GatewayProcess(env, self.root / f"gunicorn-{name}.log")

    def start(self) -> None:
        self.a.start(wait=False)  # both boot at once: half the wait
        self.b.start(wait=False)
        self.a.wait_ready(60)
        self.b.wait_ready(60)

    def stop(self) -> None:
        for process in (self.a, self.b):  # both drain at once, then each is reaped
            if process.proc is not None and process.proc.poll() is None:
                process.signal(signal.SIGTERM)
        for process in (self.a, self.b):
            process.stop()

    async def repair(self) -> None:
        """Both instances up, and both following Redis again (`resume: available`)."""
        if self.a.proc is not None and self.a.proc.poll() is not None:
            self.check_logs()
            self.a = self._instance("a2")
            self.a.start(timeout=60)
        for instance in (self.a, self.b):
            deadline = time.monotonic() + WAIT
            while True:
                async with self.socket(instance) as (_, created):
                    if created["resume"] == "available":
                        break
                assert time.monotonic() < deadline, "an instance never found Redis again"
                await asyncio.sleep(0.1)

    def check_logs(self) -> None:
        """What went wrong inside shows here rather than as a hang."""
        for process in (self.a, self.b):
            logs = process.logs()
            assert "unhandled_exception" not in logs and "websocket_failed" not in logs

    @asynccontextmanager
    async def socket(
        self, instance: GatewayProcess
    ) -> AsyncIterator[tuple[ClientConnection, Frame]]:
        """A socket to `instance` and its `session.created`."""
        url = f"ws://127.0.0.1:{instance.port}/ws/agents"
        async with connect(url, proxy=None, max_size=None, subprotocols=[PROTOCOL]) as ws:
            created = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert created["type"] == "session.created", created
            yield ws, created


@pytest.fixture(scope="module")
def running_fleet(
    fake: FakeUpstream,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("ws-fleet")
    (root / "router.yaml").write_text(router_yaml(fake, timeout=30))
    (root / "agents.yaml").write_text(AGENTS)
    postgres_server.ensure_running()
    redis_server.ensure_running()
    name = f"test_{uuid.uuid4().hex[:16]}"
    database_url = postgres_server.create_database(name)
    upgrade_head(database_url)
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "ROUTER_CONFIG": str(root / "router.yaml"),
        "AGENTS_CONFIG": str(root / "agents.yaml"),
        "WEB_CONCURRENCY": "1",
        "JOBS_IN_PROCESS": "true",
        "ENABLE_CACHE": "false",
        "SHUTDOWN_DRAIN_SECONDS": "2",
        "WS_RUN_GRACE_SECONDS": "1",  # short, so only a watch mark from B keeps a run
        "RATE_LIMIT_PER_MINUTE": "100000",
        "RATE_LIMIT_PER_HOUR": "1000000",
        "FAKE_ANTHROPIC_KEY": "unused",
    }
    fleet = Fleet(env, root)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        postgres_server.ensure_running()
        postgres_server.drop_database(name)
    fleet.check_logs()


@pytest.fixture
async def fleet(running_fleet: Fleet, redis_server: RedisServer) -> Fleet:
    redis_server.ensure_running()
    await running_fleet.repair()
    return running_fleet


# -- helpers -------------------------------------------------------------------------


async def frames_until(
    ws: ClientConnection, done: Callable[[Frame], bool], into: list[Frame] | None = None
) -> list[Frame]:
    """Frames up to and including the first `done` one (heartbeats left out), appended
    to `into` as they come (so they survive the socket's close)."""
    frames = [] if into is None else into
    async with asyncio.timeout(WAIT):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "heartbeat":
                continue
            frames.append(frame)
            if done(frame):
                return frames


def is_end(frame: Frame) -> bool:
    return frame["type"] in TERMINAL


def events(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if "seq" in f]


def covered(frames: list[Frame]) -> list[int]:
    """The seqs these events deliver, in order: a coalesced delta carries `coalesced`
    deltas and the last one's seq, so it stands for that many seqs up to its own."""
    seqs: list[int] = []
    for frame in events(frames):
        count = int(frame.get("coalesced", 1))
        seqs.extend(range(frame["seq"] - count + 1, frame["seq"] + 1))
    return seqs


def assert_exactly_once(*parts: list[Frame]) -> Frame:
    """Across the sockets' events in order: seqs 1..N, no gap, no duplicate, and the
    terminal event is the last one. Returns it."""
    frames = [frame for part in parts for frame in part]
    seqs = covered(frames)
    assert seqs == list(range(1, len(seqs) + 1)), f"gap or duplicate: {seqs}"
    last = events(frames)[-1]
    assert is_end(last), last
    assert not [f for f in events(frames)[:-1] if is_end(f)], "a terminal event before the end"
    return last


async def create(ws: ClientConnection, text: str) -> str:
    await ws.send(
        json.dumps({"type": "run.create", "id": "c", "agent_id": "talker", "input": text})
    )
    ack = (await frames_until(ws, lambda f: f["type"] in ("ack", "error")))[-1]
    assert ack["type"] == "ack", ack
    return str(ack["run_id"])


async def subscribe(ws: ClientConnection, run_id: str, after_seq: int) -> list[Frame]:
    """Subscribes and returns the frames up to the ack (events may not come before it)."""
    message = {"type": "run.subscribe", "id": "s", "run_id": run_id, "after_seq": after_seq}
    await ws.send(json.dumps(message))
    frames = await frames_until(ws, lambda f: f["type"] in ("ack", "error"))
    assert frames[-1] == {"type": "ack", "id": "s", "run_id": run_id}, frames
    assert not events(frames)
    return frames


async def read_some(ws: ClientConnection, at_least: int) -> list[Frame]:
    """The run's frames until one with seq >= `at_least` (mid-run)."""
    frames = await frames_until(ws, lambda f: f.get("seq", 0) >= at_least or is_end(f))
    assert not is_end(frames[-1]), "the run ended before the test could interrupt it"
    return frames


async def run_status(instance: GatewayProcess, run_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=instance.base_url, timeout=10) as client:
        answer = await client.get(f"/api/v1/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


# -- tests ---------------------------------------------------------------------------


async def test_a_dropped_client_resumes_on_the_other_instance(fleet: Fleet) -> None:
    async with fleet.socket(fleet.a) as (ws, created):
        assert created["resume"] == "available"
        run_id = await create(ws, "talk on instance a")
        first = await read_some(ws, at_least=20)
        ws.transport.abort()  # no close frame: the connection is simply gone
    async with fleet.socket(fleet.b) as (ws, _):
        await subscribe(ws, run_id, after_seq=events(first)[-1]["seq"])
        rest = await frames_until(ws, is_end)
    last = assert_exactly_once(first, rest)
    assert last["type"] == "run.completed", last  # B's watch mark kept it alive
    assert len(covered(rest)) > CHUNKS / 2, "most of the run came through B"
    run = await run_status(fleet.b, run_id)
    assert (run["status"], run["last_seq"]) == ("completed", last["seq"])


async def test_runs_stream_on_while_redis_is_away(fleet: Fleet, redis_server: RedisServer) -> None:
    try:
        async with fleet.socket(fleet.a) as (ws_a, _), fleet.socket(fleet.b) as (ws_b, _):
            run_id = await create(ws_a, "talk while redis is away")
            await subscribe(ws_b, run_id, after_seq=0)
            first = await read_some(ws_a, at_least=5)
            redis_server.stop()
            rest = await frames_until(ws_a, is_end)
            assert assert_exactly_once(first, rest)["type"] == "run.completed"

            followed = await frames_until(
                ws_b, lambda f: is_end(f) or (f["type"] == "error" and f["id"] is None)
            )
            if followed[-1]["type"] == "error":  # told to subscribe again, never silence
                assert followed[-1]["retryable"] is True, followed[-1]
            else:  # from the database, late, but all of it
                assert assert_exactly_once(followed) == rest[-1]

            resume = await resume_while_redis_is_away(fleet)
            assert resume == "this_instance_only"
            assert (await run_status(fleet.b, run_id))["status"] == "completed"  # no 5xx either
    finally:
        redis_server.ensure_running()


async def resume_while_redis_is_away(fleet: Fleet) -> str:
    """What a new socket on B is told about resuming, once B's reader has noticed
    Redis is gone (within its BLOCK plus margin, and a retry)."""
    deadline = time.monotonic() + 10
    while True:
        async with fleet.socket(fleet.b) as (_, created):
            if created["resume"] != "available" or time.monotonic() > deadline:
                return str(created["resume"])
        await asyncio.sleep(0.2)


async def test_a_draining_instance_hands_its_client_over(fleet: Fleet) -> None:
    async with fleet.socket(fleet.a) as (ws, _):
        run_id = await create(ws, "talk while instance a drains")
        first = await read_some(ws, at_least=10)
        started = time.monotonic()
        fleet.a.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            await frames_until(ws, lambda f: False, into=first)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, closed.value
    assert first[-1]["type"] == "server.draining", first[-1]
    assert 0 < first[-1]["reconnect_after_ms"] <= 2500
    assert time.monotonic() - started < 10
    async with fleet.socket(fleet.b) as (ws, _):
        await subscribe(ws, run_id, after_seq=events(first)[-1]["seq"])
        rest = await frames_until(ws, is_end)
    last = assert_exactly_once(first, rest)
    assert last["type"] in ("run.completed", "run.cancelled"), last
    assert (await run_status(fleet.b, run_id))["status"] == last["type"].removeprefix("run.")
    assert fleet.a.proc is not None and fleet.a.proc.wait(20) == 0  # a clean stop
