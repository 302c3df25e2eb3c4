"""Cohere's API v2 answers as OpenAI's: a `/v2/chat` answer as a `chat.completion`,
its stream events as `chat.completion.chunk`s, a `/v2/embed` answer as an
embeddings list. Pure functions and one stream's state; `core.llm.cohere` does the
HTTP and `core.llm.cohere_request` builds the requests. Shapes from Cohere's
OpenAPI document (`ChatResponseV2`, `StreamedChatResponseV2`, `Usage`) and its
streaming guides (text and tool use).

Decisions:
- Finish reasons: COMPLETE and STOP_SEQUENCE -> `stop`, MAX_TOKENS -> `length`,
  TOOL_CALL -> `tool_calls` (an unknown new one -> `stop`). ERROR (or a
  `message-end` carrying `error`) is a failed call, the upstream's like a 5xx, and
  TIMEOUT a timed-out one: neither is an answer, so neither is cached, and
  mid-stream either ends the stream with an error event, never a clean end.
- Usage is what Cohere bills (`billed_units`), the figures the ledger prices;
  `tokens` (the model's own count, including the preamble Cohere adds: 913
  against 37 billed in its tool-use example) only when no billed figure came. None
  at all: no usage (never made up).
- Content is the text blocks joined; a reasoning model's `thinking` blocks, the
  tool plan and citations have no place in OpenAI's message and are left out.
- Stream: the role chunk first (at `message-start`), text deltas, tool calls
  numbered 0.. in the order they start (id, name and first arguments in the first
  delta, then argument pieces), the finish chunk, then usage in a chunk of its own
  with `choices: []` (the gateway always asks for usage; it drops that chunk for a
  client that did not).
- The id is Cohere's (its logs know it); `model` is the deployment's model.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from core.llm.translation import count, embedding, garbage
from core.llm.types import Deployment, ProviderError
from core.llm.wire import TranslatedStream

_FINISH = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
_MAX_MESSAGE = 2000


def finish_reason(deployment: Deployment, reason: Any, error: Any = None) -> str:
    """OpenAI's finish reason for Cohere's; a failed generation as the failure it is."""
    if reason == "ERROR" or error:
        detail = error if isinstance(error, str) and error else "the generation failed"
        raise ProviderError("status", f"Cohere: {detail}"[:_MAX_MESSAGE], status=502)
    if reason == "TIMEOUT":
        raise ProviderError("timeout", f"{deployment.id}: Cohere stopped the generation (time)")
    if not isinstance(reason, str):
        raise garbage(deployment, "without a finish reason")
    return _FINISH.get(reason, "stop")


def usage(raw: Any) -> dict[str, int] | None:
    """OpenAI's usage from Cohere's, or None when it sent no figures."""
    if not isinstance(raw, dict):
        return None
    for source in (raw.get("billed_units"), raw.get("tokens")):
        if isinstance(source, dict):
            prompt = count(source.get("input_tokens"))
            completion = count(source.get("output_tokens"))
            if prompt is not None or completion is not None:
                prompt, completion = prompt or 0, completion or 0
                return {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                }
    return None


def _joined_text(content: Any) -> str | None:
    """The text blocks' text (a reasoning model's `thinking` blocks are not the answer)."""
    if isinstance(content, str):
        return content or None
    if not isinstance(content, list):
        return None
    texts = [
        block["text"]
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]
    return "".join(texts) if texts else None


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value if value is not None else {}).decode()


def _calls(deployment: Deployment, raw: Any) -> list[dict[str, Any]]:
    calls = []
    for call in raw or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise garbage(deployment, "a tool call without a function name")
        calls.append(
            {
                "id": str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
                "type": "function",
                "function": {
                    "name": function["name"],
                    "arguments": _arguments(function.get("arguments")),
                },
            }
        )
    return calls


def completion(deployment: Deployment, data: Any) -> dict[str, Any]:
    """A `chat.completion` for Cohere's non-streamed answer."""
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict):
        raise garbage(deployment, "with an unexpected shape")
    reason = finish_reason(deployment, data.get("finish_reason"))
    answer: dict[str, Any] = {
        "role": "assistant",
        "content": _joined_text(message.get("content")),
        "refusal": None,
    }
    calls = _calls(deployment, message.get("tool_calls"))
    if calls:
        answer["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": str(data.get("id") or f"chatcmpl-{uuid.uuid4().hex}"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": deployment.model,
        "choices": [{"index": 0, "message": answer, "logprobs": None, "finish_reason": reason}],
    }
    counted = usage(data.get("usage"))
    if counted is not None:
        out["usage"] = counted
    return out


def embeddings(
    deployment: Deployment, answers: list[tuple[int, Any]], encoding: str | None
) -> dict[str, Any]:
    """OpenAI's embeddings list from Cohere's answers, one per batch: (texts sent, answer)."""
    items: list[dict[str, Any]] = []
    billed = 0
    for sent, data in answers:
        vectors = ((data.get("embeddings") if isinstance(data, dict) else None) or {}).get("float")
        if not isinstance(vectors, list) or len(vectors) != sent:
            raise garbage(deployment, "without one float embedding per text")
        for vector in vectors:
            value = embedding(deployment, vector, encoding)
            items.append({"object": "embedding", "index": len(items), "embedding": value})
        meta = data.get("meta")
        units = meta.get("billed_units") if isinstance(meta, dict) else None
        billed += (count(units.get("input_tokens")) if isinstance(units, dict) else None) or 0
    return {
        "object": "list",
        "data": items,
        "model": deployment.model,
        "usage": {"prompt_tokens": billed, "total_tokens": billed},
    }


# -- streams ----------------------------------------------------------------------------
def _delta_message(event: dict[str, Any]) -> dict[str, Any]:
    delta = event.get("delta")
    message = delta.get("message") if isinstance(delta, dict) else None
    return message if isinstance(message, dict) else {}


class CohereStream(TranslatedStream):
    """One stream's state: Cohere's events in, OpenAI's chunks out (`chunks`), and
    whether `message-end` has come (`finished`: without it the stream was cut)."""

    __slots__ = ("_calls",)

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(deployment)
        self._calls: dict[int, int] = {}  # Cohere's tool-call index -> OpenAI's

    def chunks(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks one event becomes (none for the plan, citations, unknown events)."""
        kind = event.get("type")
        if kind == "message-start":
            self._name(event.get("id"))
            return self._open()
        if kind in ("content-start", "content-delta"):
            content = _delta_message(event).get("content")
            if not isinstance(content, dict) or content.get("type") == "thinking":
                return []  # a reasoning model's thinking (its deltas carry `thinking`)
            text = content.get("text")
            if not isinstance(text, str) or not text:
                return []  # the empty opening of a text block
            return [*self._open(), self._chunk({"content": text})]
        if kind == "tool-call-start":
            return [*self._open(), self._chunk({"tool_calls": [self._started(event)]})]
        if kind == "tool-call-delta":
            return [self._chunk({"tool_calls": [self._arguments(event)]})]
        if kind == "message-end":
            return self._end(event)
        return []

    def _started(self, event: dict[str, Any]) -> dict[str, Any]:
        call = _delta_message(event).get("tool_calls")
        if isinstance(call, list):  # one object by the schema; a list of one is the same
            call = call[0] if call else None
        if not isinstance(call, dict) or not isinstance(function := call.get("function"), dict):
            raise garbage(self._deployment, "a tool call without a function")
        if not isinstance(function.get("name"), str):
            raise garbage(self._deployment, "a tool call without a function name")
        index = len(self._calls)
        self._calls[self._index(event, default=index)] = index
        return {
            "index": index,
            "id": str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
            "type": "function",
            "function": {
                "name": function["name"],
                "arguments": _arguments(function.get("arguments") or ""),
            },
        }

    def _index(self, event: dict[str, Any], *, default: int) -> int:
        """The event's tool-call index, an integer (`default` when it has none: the
        call just started, or the last one); anything else is Cohere's garbage."""
        index = event.get("index", default)
        if type(index) is not int:  # bool is an int subclass, and no index
            raise garbage(self._deployment, "a tool-call event whose index is no integer")
        return index

    def _arguments(self, event: dict[str, Any]) -> dict[str, Any]:
        call = _delta_message(event).get("tool_calls")
        function = call.get("function") if isinstance(call, dict) else None
        piece = function.get("arguments") if isinstance(function, dict) else None
        index = self._calls.get(self._index(event, default=len(self._calls) - 1), -1)
        if index < 0 or not isinstance(piece, str):
            raise garbage(self._deployment, "a tool-call delta it had not started")
        return {"index": index, "function": {"arguments": piece}}

    def _end(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        reason = finish_reason(self._deployment, delta.get("finish_reason"), delta.get("error"))
        self.finished = True
        chunks = [*self._open(), self._chunk({}, reason)]
        counted = usage(delta.get("usage"))
        if counted is not None:
            last = self._chunk({})
            last["choices"] = []
            last["usage"] = counted
            chunks.append(last)
        return chunks
