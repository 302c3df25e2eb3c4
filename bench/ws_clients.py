"""The WebSocket benchmark's clients (`bench.ws`): `websockets` sessions on `/ws/agents`.

    BENCH_WS_KEY=<key> python -m bench.ws_clients URL COUNT CONCURRENCY

is the idle clients' process of the memory phase: it opens COUNT authenticated
sessions (at most CONCURRENCY handshakes at a time), prints ``OPEN <count> <seconds>``
once every one has its `session.created`, waits for a line on stdin, closes them all
and prints ``CLOSED``. A process of its own, so the clients' memory and CPU are not
counted as the gateway's; the key comes in the environment, not in `ps`.

The latency clients (`same_instance`, `cross_instance`) run in the bench's process and
take, for every run event, arrival time (`time.time()` right after `recv`) minus the
event's `ts`, and check every seq arrives exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench.jobs import percentiles

PROTOCOL = Subprotocol("skygate.agents.v1")
AGENT = "bench-ws"
TERMINAL = {"run.completed", "run.incomplete", "run.failed", "run.cancelled"}
RUN_SECONDS = 60.0  # one run's events must all arrive within this


async def open_socket(url: str, key: str) -> ClientConnection:
    """An authenticated session: connected, and its `session.created` read. No client
    pings (the server's are answered), compression offered as any client does."""
    ws = await connect(
        url,
        additional_headers={"Authorization": f"Bearer {key}"},
        subprotocols=[PROTOCOL],
        proxy=None,
        ping_interval=None,
        open_timeout=60,
        max_size=None,
    )
    first = json.loads(await ws.recv())
    if first.get("type") != "session.created":
        raise RuntimeError(f"expected session.created, got {first}")
    return ws


def raise_fd_limit(count: int) -> None:
    """Room for `count` sockets: the soft limit up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        top = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))


async def hold_idle(url: str, count: int, concurrency: int) -> None:
    raise_fd_limit(count)
    key, gate = os.environ["BENCH_WS_KEY"], asyncio.Semaphore(concurrency)

    async def one() -> ClientConnection:
        async with gate:
            return await open_socket(url, key)

    began = time.monotonic()
    sockets = await asyncio.gather(*(one() for _ in range(count)))
    print(f"OPEN {len(sockets)} {time.monotonic() - began:.3f}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    print("CLOSED", flush=True)


@dataclass
class Events:
    """What one client received of the runs it followed."""

    latency_ms: list[float] = field(default_factory=list)
    frames: int = 0
    replayed: int = 0  # emitted before the subscription was acknowledged: not timed
    coalesced: int = 0  # frames that merged several deltas (the sender lagged)
    missing: int = 0
    duplicates: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def summary(self, runs: int, seconds: float, other_cores: float) -> dict[str, Any]:
        if not self.latency_ms:
            raise RuntimeError("no run event was measured")
        return {
            "runs": runs,
            "events": len(self.latency_ms),
            "frames": self.frames,
            "replayed": self.replayed,
            "coalesced_frames": self.coalesced,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "statuses": dict(self.statuses),
            "latency_ms": percentiles(self.latency_ms),
            "seconds": round(seconds, 3),
            "other_cores": other_cores,
        }


async def _acked(ws: ClientConnection, ref: str) -> str:
    """The run id of the `ack` answering message `ref` (an `error` raises)."""
    async with asyncio.timeout(RUN_SECONDS):
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("id") == ref and frame["type"] in ("ack", "error"):
                if frame["type"] == "error":
                    raise RuntimeError(f"message {ref} refused: {frame}")
                return str(frame["run_id"])


async def follow(ws: ClientConnection, run_id: str, into: Events, live_from: float) -> None:
    """Read the run's events until its terminal one, timing those emitted at or after
    `live_from` (epoch s), and counting seqs missing or received twice."""
    seen: set[int] = set()
    async with asyncio.timeout(RUN_SECONDS):
        while True:
            raw = await ws.recv()
            arrived = time.time()
            frame = json.loads(raw)
            if frame.get("run_id") != run_id or "seq" not in frame:
                continue  # acks, heartbeats
            if "ts" not in frame:
                raise RuntimeError(f"a run event without `ts`: {frame}")
            into.frames += 1
            merged = int(frame.get("coalesced", 1))  # a merged frame's seq is its last part's
            into.coalesced += merged > 1
            seqs = range(frame["seq"] - merged + 1, frame["seq"] + 1)
            into.duplicates += sum(seq in seen for seq in seqs)
            seen.update(seqs)
            if frame["ts"] >= live_from:
                into.latency_ms.append((arrived - frame["ts"]) * 1000)
            else:
                into.replayed += 1
            if frame["type"] in TERMINAL:
                into.statuses[frame["type"]] += 1
                into.missing += frame["seq"] - len(seen)
                return


def _create(ref: str, text: str) -> str:
    return json.dumps({"type": "run.create", "id": ref, "agent_id": AGENT, "input": text})


async def same_instance(url: str, key: str, runs: int, into: Events) -> None:
    """One client creates `runs` runs one after the other and follows each."""
    ws = await open_socket(url, key)
    try:
        for i in range(runs):
            await ws.send(_create(f"s{i}", f"same {i}"))
            await follow(ws, await _acked(ws, f"s{i}"), into, 0.0)
    finally:
        await ws.close()


async def cross_instance(url_a: str, url_b: str, key: str, runs: int, into: Events) -> None:
    """A client on A creates each run (and follows it, as its creator would); a client
    on B subscribes to it from seq 0: the replay, then live through the run streams."""
    a, b = await open_socket(url_a, key), await open_socket(url_b, key)
    try:
        for i in range(runs):
            ref = f"x{i}"
            await a.send(_create(ref, f"cross {i}"))
            run_id = await _acked(a, ref)
            creator = asyncio.create_task(follow(a, run_id, Events(), 0.0))
            try:
                subscribe = {"type": "run.subscribe", "id": ref, "run_id": run_id, "after_seq": 0}
                await b.send(json.dumps(subscribe))
                await _acked(b, ref)
                await follow(b, run_id, into, time.time())
                await creator
            finally:
                creator.cancel()
    finally:
        await asyncio.gather(a.close(), b.close())


if __name__ == "__main__":
    url, count, concurrency = sys.argv[1:4]
    asyncio.run(hold_idle(url, int(count), int(concurrency)))
