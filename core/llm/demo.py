"""The offline demo model: deterministic answers, tool calls, streaming, token counts.

Served only in development when no provider is configured, so `make run`
followed by a curl or the OpenAI SDK works on a machine with no network. It
is labelled as a demo everywhere it appears and never exists in production.
Offered tools, it calls them by the rules in `demo_tools` (arithmetic ->
`calculator`, a time question -> `current_time`), so the example agents run
offline too; with no tool rule to apply it echoes, exactly as it always has.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from core.llm.demo_tools import ToolCall, decide, text_of
from core.llm.types import Chunk, Completion, Deployment, Usage

DEMO_MODEL = "demo"
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def count_tokens(text: str) -> int:
    """A rough, deterministic token count: words and punctuation marks."""
    return len(_WORD.findall(text))


def _answer(body: dict[str, Any]) -> tuple[str, tuple[ToolCall, ...], int]:
    """(text, tool calls, prompt tokens): tool calls when the tool rules decide so
    (`demo_tools`), else the text: a final answer from tool results, or the echo."""
    messages = body.get("messages") or []
    prompt_tokens = sum(count_tokens(text_of(m.get("content"))) for m in messages)
    decision = decide(body)
    if decision is not None and decision.tool_calls:
        return "", decision.tool_calls, max(prompt_tokens, 1)
    if decision is not None and decision.text is not None:
        answer = decision.text
    else:
        last_user = next(
            (text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        answer = (
            "This is Skygate's offline demo model (no provider is configured). "
            f"You said: {last_user[:500]}"
        )
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0:
        answer = " ".join(answer.split(" ")[:max_tokens])
    return answer, (), max(prompt_tokens, 1)


def _completion_tokens(answer: str, calls: tuple[ToolCall, ...]) -> int:
    if calls:
        return sum(count_tokens(call.arguments) for call in calls)
    return count_tokens(answer)


def _completion_id(body: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(body.get("messages"))).hexdigest()[:24]
    return f"chatcmpl-demo-{digest}"


def _deltas(answer: str, calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    """A choice's stream deltas, in OpenAI's shapes: the role, then the text word by
    word, or each call opened (id, name, empty arguments) and its arguments in pieces."""
    if not calls:
        pieces = re.findall(r"\S+\s*", answer)
        return [{"role": "assistant", "content": ""}, *({"content": p} for p in pieces)]
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": None}]
    for index, call in enumerate(calls):
        opening = {"index": index, "id": call.id, "type": "function"}
        deltas.append(
            {"tool_calls": [{**opening, "function": {"name": call.name, "arguments": ""}}]}
        )
        deltas.extend(
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in re.findall(r"\S+\s*", call.arguments)
        )
    return deltas


class DemoProvider:
    """Answers like an OpenAI-compatible server without leaving the process."""

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        answer, calls, prompt_tokens = _answer(body)
        n = body.get("n") or 1
        completion_tokens = _completion_tokens(answer, calls) * n
        message: dict[str, Any] = {"role": "assistant", "content": answer, "refusal": None}
        if calls:
            message["content"] = None
            message["tool_calls"] = [call.openai() for call in calls]
        data = {
            "id": _completion_id(body),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": DEMO_MODEL,
            "choices": [
                {
                    "index": i,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if calls else "stop",
                }
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "skygate-demo",
        }
        return Completion(orjson.dumps(data), data, Usage(prompt_tokens, completion_tokens))

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        answer, calls, prompt_tokens = _answer(body)
        n = body.get("n") or 1
        base = {
            "id": _completion_id(body),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": DEMO_MODEL,
            "system_fingerprint": "skygate-demo",
        }

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> Chunk:
            data = {**base, "choices": choices, **extra}
            return Chunk(orjson.dumps(data), data)

        for delta in _deltas(answer, calls):
            for i in range(n):
                yield chunk([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}])
        finish = "tool_calls" if calls else "stop"
        for i in range(n):
            yield chunk([{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}])
        completion_tokens = _completion_tokens(answer, calls) * n
        yield chunk(
            [],
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        )

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data_items = []
        tokens = 0
        for index, text in enumerate(texts):
            text = text if isinstance(text, str) else orjson.dumps(text).decode()
            tokens += max(count_tokens(text), 1)
            digest = hashlib.sha256(text.encode()).digest()
            vector = [round((b - 128) / 128, 6) for b in digest[:16]]
            embedding: Any = vector
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data_items.append({"object": "embedding", "index": index, "embedding": embedding})
        data = {
            "object": "list",
            "data": data_items,
            "model": DEMO_MODEL,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Completion(orjson.dumps(data), data, Usage(tokens, 0))

    async def close(self) -> None:
        return None
