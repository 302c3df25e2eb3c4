"""`preload_litellm`, what the gunicorn master runs before it forks: it connects
nowhere and starts no thread (neither survives a fork), and it leaves nothing of
litellm for a worker's first calls to import (what a worker imports itself it does
not share). Run in a fresh interpreter: the test session has imported more."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent("""
    import asyncio, json, socket, sys, threading
    connections = []
    real_connect = socket.socket.connect

    def recorded_connect(self, address):
        connections.append(str(address))
        return real_connect(self, address)

    socket.socket.connect = recorded_connect

    from core.llm.litellm_import import preload_litellm
    from core.llm.providers import PROVIDERS

    preload_litellm([("anthropic", "claude-haiku-4-5"), ("gemini", "gemini-2.5-flash")])
    during_preload = {"connections": list(connections), "threads": threading.active_count()}

    from bench.fake_upstream import FakeUpstream
    from core.llm.litellm_provider import LiteLLMProvider
    from core.llm.types import Deployment

    TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    CASES = {"anthropic": ("claude-haiku-4-5", ""), "google": ("gemini-2.5-flash", "/v1beta")}

    async def main():
        upstream = FakeUpstream()
        await upstream.start()
        before = set(sys.modules)
        provider, failed = LiteLLMProvider(), []
        for kind, (model, suffix) in CASES.items():
            deployment = Deployment(id=kind, group=model, kind=kind, model=model,
                                    api_base=upstream.root_url + suffix, api_key="k",
                                    transport="litellm")
            for body in ({"messages": [{"role": "user", "content": "hello"}]},
                         {"messages": [{"role": "user", "content": "weather in Paris?"}],
                          "tools": [TOOL]}):
                try:
                    await provider.complete(deployment, body)
                    async for _ in provider.stream(deployment, body):
                        pass
                except Exception as exc:
                    failed.append(f"{kind}: {exc!r}"[:300])
        await upstream.stop()
        new = sorted(m for m in set(sys.modules) - before if m.startswith(("litellm", "anyio")))
        litellm_kinds = sorted(k for k, s in PROVIDERS.items() if s.litellm_translates)
        print(json.dumps({**during_preload, "failed": failed, "imported_by_calls": new,
                          "litellm_kinds": litellm_kinds}))

    asyncio.run(main())
""")


def test_preload_connects_nowhere_starts_no_thread_and_leaves_nothing_to_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["connections"] == []
    assert report["threads"] == 1
    # a kind litellm may translate that this test does not call would go unchecked
    assert report["litellm_kinds"] == ["anthropic", "google"]
    assert report["failed"] == []
    # Each name here belongs in litellm_import.FIRST_CALL_MODULES (or is imported by one).
    assert report["imported_by_calls"] == []
