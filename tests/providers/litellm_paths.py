"""Run in a fresh interpreter by `test_litellm_imports.py`: every provider kind litellm may
translate (`translation: litellm`): its chat (with tools), streaming (with tools) and
embedding path, through `LiteLLMProvider` against the fake upstream on 127.0.0.1, with
every other connection refused. Prints one JSON object: the calls that failed (with the
exception chain's types and messages) and the installed distributions the process
loaded.

A fresh process matters: the test session has imported more than a worker does, and a
module litellm imports lazily on one of these paths is imported here only if the path
really takes it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import socket
import sys
from typing import Any

_AT_START = frozenset(sys.modules)  # what the interpreter loaded itself (site, .pth hooks)
_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise OSError(f"network refused in this test: {address!r}")
    _real_connect(self, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign,assignment]

from bench.fake_upstream import FakeUpstream  # noqa: E402
from core.llm.litellm_provider import LiteLLMProvider  # noqa: E402
from core.llm.providers import PROVIDERS  # noqa: E402
from core.llm.types import Deployment  # noqa: E402

# Per kind: the chat model, the embedding model (None: the provider has no embeddings
# API) and the fake's base URL below its root (as the real service's base URL has it).
CASES: dict[str, tuple[str, str | None, str]] = {
    "anthropic": ("claude-haiku-4-5", None, ""),
    "google": ("gemini-2.5-flash", "text-embedding-004", "/v1beta"),
}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _chain(exc: BaseException) -> list[str]:
    found: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(found) < 6:
        found.append(f"{type(current).__name__}: {str(current)[:300]}")
        current = current.__cause__ or current.__context__
    return found


async def _exercise(upstream: FakeUpstream, failures: dict[str, list[str]]) -> None:
    provider = LiteLLMProvider()
    chat = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [TOOL]}
    for kind, spec in PROVIDERS.items():
        if not spec.litellm_translates:
            continue
        if kind not in CASES:
            failures[kind] = ["no case in tests/providers/litellm_paths.py"]
            continue
        model, embedding_model, suffix = CASES[kind]

        def deployment(name: str, kind: str = kind, suffix: str = suffix) -> Deployment:
            return Deployment(
                id=f"{kind}/{name}",
                group=name,
                kind=kind,
                model=name,
                api_base=upstream.root_url + suffix,
                api_key="fake-key",
                transport="litellm",
            )

        try:
            await provider.complete(deployment(model), chat)
        except Exception as exc:
            failures[f"{kind} chat"] = _chain(exc)
        try:
            async for _ in provider.stream(deployment(model), chat):
                pass
        except Exception as exc:
            failures[f"{kind} stream"] = _chain(exc)
        if embedding_model is not None:
            try:
                await provider.embed(deployment(embedding_model), {"input": ["a", "b"]})
            except Exception as exc:
                failures[f"{kind} embeddings"] = _chain(exc)


def _distributions() -> list[str]:
    owners = importlib.metadata.packages_distributions()
    names = {
        dist
        for module in set(sys.modules) - _AT_START
        if "." not in module and module not in sys.stdlib_module_names
        for dist in owners.get(module, ())
    }
    return sorted(names)


async def main() -> None:
    failures: dict[str, list[str]] = {}
    upstream = FakeUpstream()
    await upstream.start()
    try:
        await _exercise(upstream, failures)
    finally:
        await upstream.stop()
    print(json.dumps({"failures": failures, "distributions": _distributions()}))


if __name__ == "__main__":
    asyncio.run(main())
