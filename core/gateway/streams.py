"""Server-sent events: assembling a streamed completion, and replaying a stored one.

A stream is cached only as the completion it assembles to (the same shape a
non-streaming call returns), so a cached answer serves both kinds of request:
`replay` turns it back into OpenAI-shaped `chat.completion.chunk` events. The
rule for the first direction: an answer assembled from a stream is stored only
with every field a non-streaming answer would have had (logprobs included), or
not at all — `StreamAssembler.complete` is false for a stream carrying anything
the assembler does not know, or no usage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from core.llm.router import StreamHandle, local_failure
from core.llm.types import Chunk, ProviderError

DONE = b"data: [DONE]\n\n"
HEARTBEAT = b": keep-alive\n\n"


def sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def sse_error(message: str, *, code: str, error_type: str = "upstream_error") -> bytes:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return sse(orjson.dumps(body))


# What the assembler knows. A chunk, choice, delta, tool call or logprobs object
# carrying any other key with a value (litellm spells "absent" as null, e.g.
# `"citations": null`) is something a stored answer would lose, so the stream is
# not cached: a later non-streaming request must get every field it would have
# got from the provider, or a miss.
_CHUNK_KEYS = frozenset(
    {
        "id",
        "object",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
        "choices",
        "usage",
        "obfuscation",  # OpenAI's stream-only padding (`include_obfuscation`)
    }
)
_CHOICE_KEYS = frozenset({"index", "delta", "logprobs", "finish_reason"})
_DELTA_KEYS = frozenset({"role", "content", "refusal", "tool_calls", "function_call"})
_LOGPROBS_KEYS = frozenset({"content", "refusal"})
_TOOL_CALL_KEYS = frozenset({"index", "id", "type", "function"})
_FUNCTION_KEYS = frozenset({"name", "arguments"})
_META_FIRST = ("id", "created", "model")  # the first chunk's values
_META_LAST = ("system_fingerprint", "service_tier")  # the last value sent, even null


def _known(data: dict[str, Any], keys: frozenset[str]) -> bool:
    return data.keys() <= keys or all(v is None for k, v in data.items() if k not in keys)


@dataclass(slots=True)
class _ChoiceState:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    function_call: dict[str, str] | None = None
    logprobs: dict[str, list[Any] | None] | None = None  # None: no chunk carried any
    finish_reason: str | None = None


class StreamAssembler:
    """Accumulates chunks into the `chat.completion` a non-streaming call returns.

    Assembled exactly: content, refusal, tool calls, the deprecated function call,
    logprobs (content and refusal lists), finish reasons, usage with its details,
    `system_fingerprint` and `service_tier`. Anything else makes `exact` false.
    """

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.choices: dict[int, _ChoiceState] = {}
        self.usage: dict[str, Any] | None = None
        self.exact = True

    def add(self, chunk: dict[str, Any]) -> None:
        if not _known(chunk, _CHUNK_KEYS):
            self.exact = False
        for key in _META_FIRST:
            if self.meta.get(key) is None and chunk.get(key) is not None:
                self.meta[key] = chunk[key]
        for key in _META_LAST:
            if key in chunk and (chunk[key] is not None or key not in self.meta):
                self.meta[key] = chunk[key]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        elif usage is not None:
            self.exact = False
        choices = chunk.get("choices")
        if choices is None:
            return
        if not isinstance(choices, list):
            self.exact = False
            return
        for choice in choices:
            if isinstance(choice, dict):
                self._add_choice(choice)
            else:
                self.exact = False

    def _add_choice(self, choice: dict[str, Any]) -> None:
        if not _known(choice, _CHOICE_KEYS):
            self.exact = False
        index = choice.get("index", 0)
        if not isinstance(index, int):
            self.exact = False
            return
        state = self.choices.get(index)
        if state is None:
            state = self.choices[index] = _ChoiceState()
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._add_delta(state, delta)
        elif delta is not None:
            self.exact = False
        logprobs = choice.get("logprobs")
        if logprobs is not None:
            self._add_logprobs(state, logprobs)
        finish = choice.get("finish_reason")
        if isinstance(finish, str):
            state.finish_reason = finish
        elif finish is not None:
            self.exact = False

    def _add_delta(self, state: _ChoiceState, delta: dict[str, Any]) -> None:
        if not _known(delta, _DELTA_KEYS):
            self.exact = False
        role = delta.get("role")
        if isinstance(role, str) and role:
            state.role = role
        for key, parts in (("content", state.content), ("refusal", state.refusal)):
            value = delta.get(key)
            if isinstance(value, str):
                if value:
                    parts.append(value)
            elif value is not None:
                self.exact = False
        for call in delta.get("tool_calls") or ():
            self._add_tool_call(state, call)
        function_call = delta.get("function_call")
        if function_call is not None:
            if state.function_call is None:
                state.function_call = {"name": "", "arguments": ""}
            self._add_function(state.function_call, function_call)

    def _add_tool_call(self, state: _ChoiceState, call: Any) -> None:
        if not isinstance(call, dict) or not _known(call, _TOOL_CALL_KEYS):
            self.exact = False
            return
        index = call.get("index", 0)
        if not isinstance(index, int):
            self.exact = False
            return
        slot = state.tool_calls.get(index)
        if slot is None:
            slot = state.tool_calls[index] = {
                "id": None,
                "type": "function",
                "function": {"name": "", "arguments": ""},
            }
        for key in ("id", "type"):
            value = call.get(key)
            if isinstance(value, str) and value:
                slot[key] = value
            elif value is not None and not isinstance(value, str):
                self.exact = False
        if slot["type"] != "function":  # custom tool calls: not assembled
            self.exact = False
        function = call.get("function")
        if function is not None:
            self._add_function(slot["function"], function)

    def _add_function(self, slot: dict[str, str], function: Any) -> None:
        if not isinstance(function, dict) or not _known(function, _FUNCTION_KEYS):
            self.exact = False
            return
        for key in ("name", "arguments"):
            value = function.get(key)
            if isinstance(value, str):
                slot[key] += value
            elif value is not None:
                self.exact = False

    def _add_logprobs(self, state: _ChoiceState, logprobs: Any) -> None:
        if not isinstance(logprobs, dict) or not _known(logprobs, _LOGPROBS_KEYS):
            self.exact = False
            return
        if state.logprobs is None:
            state.logprobs = {"content": None, "refusal": None}
        for key in ("content", "refusal"):
            tokens = logprobs.get(key)
            if isinstance(tokens, list):
                state.logprobs[key] = [*(state.logprobs[key] or ()), *tokens]
            elif tokens is not None:
                self.exact = False

    @property
    def finished(self) -> bool:
        """Every choice sent its finish reason."""
        return bool(self.choices) and all(
            c.finish_reason is not None for c in self.choices.values()
        )

    @property
    def complete(self) -> bool:
        """Finished, with usage, and nothing seen that `completion()` would lose: the
        only streams worth caching (a hit may answer a non-streaming request)."""
        return (
            self.exact
            and self.usage is not None
            and self.finished
            and all(  # a call without its id would be stored outside OpenAI's schema
                isinstance(call["id"], str)
                for choice in self.choices.values()
                for call in choice.tool_calls.values()
            )
        )

    def completion(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            message: dict[str, Any] = {
                "role": state.role,
                "content": "".join(state.content) if state.content else None,
                "refusal": "".join(state.refusal) if state.refusal else None,
            }
            if state.tool_calls:
                message["tool_calls"] = [state.tool_calls[i] for i in sorted(state.tool_calls)]
            if state.function_call is not None:
                message["function_call"] = state.function_call
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": state.logprobs,
                    "finish_reason": state.finish_reason,
                }
            )
        data: dict[str, Any] = {
            "id": self.meta.get("id"),
            "object": "chat.completion",
            "created": self.meta.get("created"),
            "model": self.meta.get("model"),
            "choices": choices,
            "usage": self.usage,
        }
        for key in _META_LAST:
            if key in self.meta:
                data[key] = self.meta[key]
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
    for key in ("system_fingerprint", "service_tier"):
        if completion.get(key):
            base[key] = completion[key]

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
                        "logprobs": choice.get("logprobs"),  # every token's, with the text
                        "finish_reason": None,
                    }
                ]
            )
        if message.get("function_call"):
            yield event(
                [
                    {
                        "index": index,
                        "delta": {"function_call": message["function_call"]},
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
    """The bytes to forward, or None to drop (a usage chunk the client did not ask for).
    Providers send usage only in a last chunk of its own (`core.llm.wire.StreamShape`);
    a chunk with choices and usage is still trimmed, never dropped, whoever sent it."""
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
        await queue.put(local_failure(handle.deployment, error) if error.kind == "local" else error)
        return
    except Exception as exc:  # a bug on Skygate's side: end the stream with an error event
        await queue.put(local_failure(handle.deployment, exc))
        return
    finally:
        with contextlib.suppress(Exception):
            await handle.rest.aclose()  # type: ignore[attr-defined]
    await queue.put(None)


async def aiter_of(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item
