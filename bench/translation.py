"""CPU per provider call: Skygate's own Anthropic translation (`core.llm.anthropic`) against
litellm's (`core.llm.litellm_provider`, what `translation: litellm` selects), both calling
the fake upstream's Messages API in another process, so the figure is the client side
alone (building the request, the HTTP exchange, reading the answer or each event).

    .venv/bin/python -m bench.translation            # 400 calls per mode, both paths
    BENCH_TRANSLATION_CALLS=1000 .venv/bin/python -m bench.translation

Modes: a chat completion, a stream, and a stream with a tool call. Each path runs in a
fresh interpreter (one has imported litellm, the other never does), after 20 calls of
warm-up; `time.process_time()` over the calls, divided by their number.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import ROOT, VENV_BIN, start_upstream

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
PATHS = ("native", "litellm")


async def _measure(path: str, port: int, calls: int) -> dict[str, float]:
    from core.llm.types import Deployment

    provider: Any
    if path == "litellm":
        from core.llm.litellm_import import litellm_module
        from core.llm.litellm_provider import LiteLLMProvider

        litellm_module()
        provider = LiteLLMProvider()
    else:
        from core.llm.anthropic import AnthropicProvider

        provider = AnthropicProvider()
    deployment = Deployment(
        id="bench", group="claude", kind="anthropic", model="claude-haiku-4-5",
        api_base=f"http://127.0.0.1:{port}", api_key="k",
        transport="litellm" if path == "litellm" else "anthropic",
    )  # fmt: skip
    texts = [{"messages": [{"role": "user", "content": f"hello {i}"}]} for i in range(calls)]
    tool = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [TOOL]}
    for body in texts[:20]:
        await provider.complete(deployment, body)
    found = {}
    for mode in ("complete", "stream", "tool-stream"):
        started = time.process_time()
        for body in texts:
            if mode == "complete":
                await provider.complete(deployment, body)
            else:
                async for _ in provider.stream(deployment, tool if mode == "tool-stream" else body):
                    pass
        found[mode] = (time.process_time() - started) / calls * 1000
    await provider.close()
    return found


def main() -> None:
    if len(sys.argv) == 4:  # the child: one path
        path, port, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        print(json.dumps(asyncio.run(_measure(path, port, calls))))
        return
    calls = int(os.environ.get("BENCH_TRANSLATION_CALLS", "400"))
    with tempfile.TemporaryDirectory(prefix="skygate-bench-translation-") as work:
        upstream = start_upstream(0, Path(work))
        try:
            results = {}
            for path in PATHS:
                child = subprocess.run(
                    [str(VENV_BIN / "python"), "-m", "bench.translation", path,
                     upstream.env["PORT"], str(calls)],
                    cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
                )  # fmt: skip
                results[path] = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            upstream.stop()
    print(f"CPU ms per call, Anthropic, {calls} calls per mode (client side only)")
    print(f"  {'mode':<12} {'native':>8} {'litellm':>8}")
    for mode in results["native"]:
        native, litellm = results["native"][mode], results["litellm"][mode]
        print(f"  {mode:<12} {native:8.2f} {litellm:8.2f}   {litellm / native:5.1f}x")


if __name__ == "__main__":
    main()
