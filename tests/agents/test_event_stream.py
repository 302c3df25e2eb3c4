"""Run events across instances over Redis Streams (`agents.event_stream`).

Two app instances in this test process share PostgreSQL and Redis, as two gateway
instances do: a run executes on A, and a follower on B (where it does not run) gets
its events through the run's stream and B's one stream reader, live (latency far
under the database poll's), exactly once and in order; it resumes from any seq; and
with Redis stopped or frozen mid-run it still gets every event (from the database),
then goes live again when Redis is back.

The reference clock is a follower on A, the run's own process: it gets each event in
the loop turn after the engine emitted it, so B's arrival minus A's is the cost of
crossing instances. The model is the fake upstream streaming one word per chunk.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents import event_stream
from agents.events import FLUSH_SECONDS, POLL_SECONDS, RunEvent, follow
from agents.run_views import RunRequest
from agents.runtime import Agents
from bench.fake_upstream import FakeUpstream
from core.auth.authenticator import Principal
from database.models import AgentRun
from tests.support.app import make_settings, running_app
from tests.support.llm import router_yaml
from tests.support.servers import RedisServer
from tests.worker.fleet import until

MODEL = "primary-1"  # the fake upstream's model behind the `primary` group
AGENTS = """\
agents:
  - id: talker
    name: Talker
    model: primary
"""
PRINCIPAL = Principal(tenant="team-a", key_id=None, admin=False, limit_key="tenant:team-a")


def words(count: int) -> str:
    return " ".join(f"w{i}" for i in range(count))


@dataclass
class Pair:
    a: Agents  # where the runs execute
    b: Agents  # where they are followed


@pytest.fixture
async def pair(
    migrated_postgres_url: str,
    redis_url: str,
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Pair]:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "fake-anthropic-key")  # router_yaml's claude group
    router = tmp_path / "router.yaml"
    router.write_text(router_yaml(upstream, timeout=30))
    agents = tmp_path / "agents.yaml"
    agents.write_text(AGENTS)
    settings = make_settings(
        database_url=migrated_postgres_url,
        redis_url=redis_url,
        router_config=str(router),
        agents_config=str(agents),
        enable_cache=False,
        redis_retry_seconds=0.5,  # the breaker probes a returned Redis soon
    )
    async with running_app(settings) as (app_a, _), running_app(settings) as (app_b, _):
        yield Pair(app_a.state.agents, app_b.state.agents)


class Follower:
    """One follower's events as they arrive, each with when it arrived."""

    def __init__(self, agents: Agents, run_id: str, after: int = 0) -> None:
        self.events: list[RunEvent] = []
        self.arrived: dict[int, float] = {}
        self.task = asyncio.create_task(self._follow(agents, run_id, after))

    async def _follow(self, agents: Agents, run_id: str, after: int) -> None:
        async for event in agents.runs.events(run_id, after):
            self.arrived.setdefault(event.seq, time.perf_counter())
            self.events.append(event)

    @property
    def last(self) -> int:
        return self.events[-1].seq if self.events else 0

    async def reached(self, seq: int, within: float = 20) -> None:
        async def there() -> bool:
            return self.last >= seq

        await until(there, within, what=f"seq {seq} (at {self.last})")

    async def finished(self, within: float = 60) -> list[RunEvent]:
        await asyncio.wait_for(self.task, within)
        return self.events


async def create(agents: Agents) -> AgentRun:
    row, _ = await agents.runs.create(PRINCIPAL, "talker", RunRequest(input="Talk."), "stream")
    return row


def start(agents: Agents, row: AgentRun) -> None:
    async def principal() -> Principal:
        return PRINCIPAL

    agents.runs.start(row, principal)


async def followed(agents: Agents, run_id: str) -> None:
    async def subscribed() -> bool:
        return run_id in agents.live.bus.followed if agents.live.bus else False

    await until(subscribed, 10, what="the follower's subscription")


def latencies(reference: Follower, other: Follower, seqs: Iterator[int]) -> list[float]:
    """Milliseconds from the reference's arrival to the other's, per seq."""
    return [(other.arrived[s] - reference.arrived[s]) * 1000 for s in seqs]


def deltas(events: list[RunEvent], after: int = 0) -> Iterator[int]:
    return (e.seq for e in events if e.type == "message.delta" and e.seq > after)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def assert_same_run(events: list[RunEvent], reference: list[RunEvent], first: int = 1) -> None:
    """Every event of the reference from `first` on, exactly once, in order, equal."""
    assert [e.seq for e in events] == list(range(first, reference[-1].seq + 1))
    assert events == [e for e in reference if e.seq >= first]
    assert events[-1].type == "run.completed"


async def test_a_follower_on_another_instance_gets_the_run_live_once_and_in_order(
    pair: Pair, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour(MODEL, "script", turns=[{"content": words(80)}], chunk_delay_ms=15)
    row = await create(pair.a)
    remote = Follower(pair.b, row.id)  # before the run starts: it waits on the stream
    await followed(pair.b, row.id)
    start(pair.a, row)
    local = Follower(pair.a, row.id)
    reference = await local.finished()
    events = await remote.finished()

    assert_same_run(events, reference)
    assert pair.b.live.bus is not None and pair.b.live.bus.live_available
    assert row.id not in pair.b.live.bus.followed  # the follower left its stream
    lag = latencies(local, remote, deltas(events))
    assert len(lag) >= 70
    # The database alone delivers a delta after its flush and the next poll (~250 ms
    # and more); the stream does it in a few milliseconds.
    assert statistics.median(lag) < 50, sorted(lag)
    assert p(lag, 0.9) < FLUSH_SECONDS * 1000 / 2, sorted(lag)


async def test_a_stream_that_joins_the_readers_wait_is_read_at_once_and_a_queued_cancel_too(
    pair: Pair, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the wake, a stream joining a 5 s BLOCK would wait for its end.
    monkeypatch.setattr(event_stream, "BLOCK_MS", 5000)
    upstream.set_behaviour(MODEL, "script", turns=[{"content": words(20)}], chunk_delay_ms=10)
    bus = pair.b.live.bus
    assert bus is not None
    quiet = await create(pair.a)  # queued, never started: its stream stays silent
    waiting = Follower(pair.b, quiet.id)
    await followed(pair.b, quiet.id)

    async def blocked() -> bool:
        return bus.reading

    await until(blocked, 10, what="B's reader to wait on the quiet stream")
    row = await create(pair.a)
    remote = Follower(pair.b, row.id)
    await followed(pair.b, row.id)
    start(pair.a, row)
    local = Follower(pair.a, row.id)
    reference = await local.finished()
    assert_same_run(await remote.finished(), reference)
    assert max(latencies(local, remote, (e.seq for e in reference))) < 1000

    # A queued run's cancel is written by whoever takes it, outside any log: it is
    # published too, so B has it at once, not at its next look at the store (5 s).
    asked = time.perf_counter()
    await pair.a.runs.cancel("team-a", run_id=quiet.id, idempotency_key=None, mode="immediate")
    (cancelled,) = await waiting.finished()
    assert (cancelled.seq, cancelled.type) == (1, "run.cancelled")
    assert waiting.arrived[1] - asked < 1.0
    assert bus.followed == frozenset()


async def test_a_follower_on_another_instance_resumes_after_any_seq(
    pair: Pair, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour(MODEL, "script", turns=[{"content": words(60)}], chunk_delay_ms=15)
    row = await create(pair.a)
    start(pair.a, row)
    local = Follower(pair.a, row.id)
    await local.reached(20)
    # Mid-run: what B's store has after 10, then the stream, with no gap or duplicate
    # where the two meet (deltas reach the store only every flush).
    mid = Follower(pair.b, row.id, after=10)
    reference = await local.finished()
    assert_same_run(await mid.finished(), reference, first=11)

    # After the run: the rest, from the store, then the end.
    last = reference[-1].seq
    late = Follower(pair.b, row.id, after=last - 5)
    assert_same_run(await late.finished(), reference, first=last - 4)
    done = Follower(pair.b, row.id, after=last)
    assert await done.finished() == []


async def test_a_follower_that_stops_early_leaves_its_stream_at_once(
    pair: Pair, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour(MODEL, "script", turns=[{"content": words(40)}], chunk_delay_ms=20)
    bus = pair.b.live.bus
    assert bus is not None
    row = await create(pair.a)
    start(pair.a, row)
    events = follow(pair.b.live, pair.b.runs.runs, row.id, 0)  # what runs.events returns
    assert (await anext(events)).seq == 1
    await followed(pair.b, row.id)
    await events.aclose()  # a client's unsubscribe
    assert bus.followed == frozenset()
    cancelled = Follower(pair.b, row.id)
    await followed(pair.b, row.id)
    cancelled.task.cancel()  # a client gone
    with pytest.raises(asyncio.CancelledError):
        await cancelled.task
    assert bus.followed == frozenset()
    await pair.a.runs.wait_settled(row.id)


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
async def test_with_redis_away_mid_run_a_follower_gets_every_event_then_goes_live_again(
    pair: Pair,
    upstream: FakeUpstream,
    redis_server: RedisServer,
    outage: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_stream, "BLOCK_MS", 500)  # a frozen Redis noticed in 1.5 s
    upstream.set_behaviour(MODEL, "script", turns=[{"content": words(320)}], chunk_delay_ms=20)
    bus = pair.b.live.bus
    assert bus is not None
    row = await create(pair.a)
    remote = Follower(pair.b, row.id)
    await followed(pair.b, row.id)
    start(pair.a, row)
    local = Follower(pair.a, row.id)
    await remote.reached(15)

    await asyncio.to_thread(redis_server.stop if outage == "stopped" else redis_server.freeze)
    down = local.last

    async def degraded() -> bool:
        return not bus.live_available

    await until(degraded, 10, what="B to notice Redis is away")
    await remote.reached(down + 30)  # the run goes on, and B reads it from the database
    await asyncio.to_thread(redis_server.start if outage == "stopped" else redis_server.thaw)

    async def live() -> bool:
        return bus.live_available

    await until(live, 10, what="B to be live again")
    back = local.last
    reference = await local.finished()
    events = await remote.finished()

    assert_same_run(events, reference)
    assert reference[-1].seq > back + 40, "the run ended before Redis was back"
    outage_lag = latencies(local, remote, deltas(events, down + 5))[:20]
    assert statistics.median(outage_lag) > POLL_SECONDS * 1000 / 2  # from the database
    # Live again: once A's writer has caught up, deltas arrive in milliseconds.
    lag = latencies(local, remote, deltas(events, back + 20))
    assert len(lag) >= 20 and statistics.median(lag) < 50, sorted(lag)
