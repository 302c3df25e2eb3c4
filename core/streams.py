"""Server-sent events: assembling a streamed completion, and replaying a stored one.

A stream is cached only as the completion it assembles to (the same shape a
non-streaming call returns), so a cached answer serves both kinds of request:
`replay` turns it back into OpenAI-shaped `chat.completion.chunk` events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import orjson

from core.llm.router import StreamHandle
from core.llm.types import Chunk, ProviderError

DONE = b"data: [DONE]\n\n"
HEARTBEAT = b": keep-alive\n\n"


def sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def sse_error(message: str, *, code: str, error_type: str = "upstream_error") -> bytes:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return sse(orjson.dumps(body))


class StreamAssembler:
    """Accumulates chunks into the equivalent `chat.completion` object."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.meta:
            self.meta = {k: chunk.get(k) for k in ("id", "created", "model", "system_fingerprint")}
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            state = self.choices.setdefault(
                index,
                {
                    "role": "assistant",
                    "content": [],
                    "refusal": [],
                    "tool_calls": {},
                    "finish_reason": None,
                },
            )
            delta = choice.get("delta") or {}
            if delta.get("role"):
                state["role"] = delta["role"]
            if delta.get("content"):
                state["content"].append(delta["content"])
            if delta.get("refusal"):
                state["refusal"].append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                slot = state["tool_calls"].setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                if call.get("type"):
                    slot["type"] = call["type"]
                function = call.get("function") or {}
                if function.get("name"):
                    slot["function"]["name"] += function["name"]
                if function.get("arguments"):
                    slot["function"]["arguments"] += function["arguments"]
            if choice.get("finish_reason"):
                state["finish_reason"] = choice["finish_reason"]

    @property
    def complete(self) -> bool:
        return bool(self.choices) and all(
            c["finish_reason"] is not None for c in self.choices.values()
        )

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            message: dict[str, Any] = {
                "role": state["role"],
                "content": "".join(state["content"]) if state["content"] else None,
                "refusal": "".join(state["refusal"]) if state["refusal"] else None,
            }
            if state["tool_calls"]:
                message["tool_calls"] = [
                    state["tool_calls"][i] for i in sorted(state["tool_calls"])
                ]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": state["finish_reason"],
                }
            )
        data = {
            "id": self.meta.get("id"),
            "object": "chat.completion",
            "created": self.meta.get("created"),
            "model": self.meta.get("model"),
            "choices": choices,
            "usage": self.usage,
        }
        if self.meta.get("system_fingerprint"):
            data["system_fingerprint"] = self.meta["system_fingerprint"]
        return data


def cacheable(completion: dict[str, Any]) -> bool:
    """Only whole, unfiltered answers are cached (no refusals, no content filter)."""
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            return False
        if choice.get("finish_reason") in (None, "content_filter", "length_error"):
            return False
        message = choice.get("message") or {}
        if isinstance(message, dict) and message.get("refusal"):
            return False
    return True


def replay(completion: dict[str, Any], *, include_usage: bool) -> Iterator[bytes]:
    """A stored completion as the SSE events a live stream would have sent."""
    base = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }
    if completion.get("system_fingerprint"):
        base["system_fingerprint"] = completion["system_fingerprint"]

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse(orjson.dumps({**base, "choices": choices, **extra}))

    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        yield event(
            [
                {
                    "index": index,
                    "delta": {"role": message.get("role", "assistant"), "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )
        if message.get("content"):
            yield event(
                [
                    {
                        "index": index,
                        "delta": {"content": message["content"]},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        for position, call in enumerate(message.get("tool_calls") or ()):
            yield event(
                [
                    {
                        "index": index,
                        "delta": {"tool_calls": [{"index": position, **call}]},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        yield event(
            [
                {
                    "index": index,
                    "delta": {},
                    "logprobs": None,
                    "finish_reason": choice.get("finish_reason"),
                }
            ]
        )
    if include_usage and completion.get("usage"):
        yield event([], usage=completion["usage"])
    yield DONE


def client_payload(chunk: Chunk, include_usage: bool) -> bytes | None:
    """The bytes to forward, or None to drop (a usage chunk the client did not ask for)."""
    data = chunk.data
    if include_usage or not data.get("usage"):
        return chunk.payload
    if not data.get("choices"):
        return None
    trimmed = {k: v for k, v in data.items() if k != "usage"}
    return orjson.dumps(trimmed)


async def pump(handle: StreamHandle, queue: asyncio.Queue[Chunk | ProviderError | None]) -> None:
    """Reads the upstream stream into the queue; None marks a clean end."""
    await queue.put(handle.first)
    try:
        async for chunk in handle.rest:
            await queue.put(chunk)
    except ProviderError as error:
        await queue.put(error)
        return
    finally:
        with contextlib.suppress(Exception):
            await handle.rest.aclose()  # type: ignore[attr-defined]
    await queue.put(None)


async def aiter_of(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item
