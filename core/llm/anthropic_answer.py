"""Anthropic Messages API answers as OpenAI's: a `/v1/messages` answer as a
`chat.completion`, its stream events as `chat.completion.chunk`s. Pure functions and
one stream's state; `core.llm.anthropic_request` builds the requests. Not wired into
the gateway yet. Shapes from Anthropic's API reference (Messages, streaming, errors).

Decisions:
- Finish reasons: `end_turn`, `stop_sequence` and `pause_turn` -> `stop`,
  `max_tokens` and `model_context_window_exceeded` -> `length`, `tool_use` ->
  `tool_calls`, `refusal` -> `content_filter` (an unknown new one -> `stop`).
- Usage: the prompt is everything Anthropic read, `input_tokens` plus the cache's
  writes and reads (`input_tokens` alone excludes both), with the reads as
  `prompt_tokens_details.cached_tokens` and the writes as `cache_write_tokens`, the
  figures the ledger prices. None at all: no usage (never made up).
- Content is the text blocks joined; `tool_use` blocks are tool calls (arguments: the
  JSON of `input`). Thinking blocks, server tools' blocks and citations have no
  place in OpenAI's message and are left out.
- An `error` (a stream's event, or a 200 body of `"type": "error"`) is a failed call
  with the status Anthropic gives that error type (`overloaded_error` is 529): never
  an answer, so never cached, and mid-stream it ends the stream with an error event.
- Stream: the role chunk first (at `message_start`), text deltas, tool calls numbered
  0.. in the order their blocks start (the first delta carries id, type, name and
  `arguments: ""`, later ones argument pieces only), the finish chunk at
  `message_delta`, then usage in a chunk of its own with `choices: []` (the gateway
  always asks for usage; it drops that chunk for a client that did not);
  `message_stop` sets `finished` (without it the stream was cut).
- The id is Anthropic's (`msg_...`, its logs know it); `model` is the deployment's.
- JSON mode: the forced tool's call is the content (`core.llm.anthropic_json`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from core.llm.anthropic_json import (
    JsonTool,
    _dumps,
    _forced,
    _json_answer,
    _json_finish,
    _unwrapped,
)
from core.llm.translation import count, garbage
from core.llm.types import Deployment, ProviderError
from core.llm.wire import TranslatedStream

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The HTTP status Anthropic answers each error type with (its errors reference).
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_MAX_MESSAGE = 2000


def error(deployment: Deployment, data: Any) -> ProviderError:
    """The failure an Anthropic error object (`{"type": "error", "error": {...}}`) is."""
    detail = data.get("error") if isinstance(data, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    kind, message = detail.get("type"), detail.get("message")
    status = _ERROR_STATUS.get(kind, 502) if isinstance(kind, str) else 502
    text = f"Anthropic: {message if isinstance(message, str) and message else kind or 'error'}"
    if status == 504:
        return ProviderError("timeout", f"{deployment.id}: {text}"[:_MAX_MESSAGE])
    return ProviderError("status", text[:_MAX_MESSAGE], status=status)


def finish_reason(deployment: Deployment, reason: Any) -> str:
    """OpenAI's finish reason for Anthropic's `stop_reason`."""
    if not isinstance(reason, str):
        raise garbage(deployment, "without a stop reason")
    return _FINISH.get(reason, "stop")


def usage(raw: Any) -> dict[str, Any] | None:
    """OpenAI's usage from Anthropic's, or None when it sent no figures."""
    if not isinstance(raw, dict):
        return None
    fresh = count(raw.get("input_tokens"))
    written = count(raw.get("cache_creation_input_tokens"))
    read = count(raw.get("cache_read_input_tokens"))
    completion = count(raw.get("output_tokens"))
    if fresh is None and written is None and read is None and completion is None:
        return None
    prompt = (fresh or 0) + (written or 0) + (read or 0)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion or 0,
        "total_tokens": prompt + (completion or 0),
    }
    details = {
        name: value
        for name, value in (("cached_tokens", read), ("cache_write_tokens", written))
        if value
    }
    if details:
        out["prompt_tokens_details"] = details
    return out


def _call_id(value: Any) -> str:
    return value if isinstance(value, str) and value else f"call_{uuid.uuid4().hex[:24]}"


def completion(
    deployment: Deployment, data: Any, *, json_tool: JsonTool | None = None
) -> dict[str, Any]:
    """A `chat.completion` for Anthropic's non-streamed answer (`json_tool`: the request's
    forced JSON tool, whose call is the content)."""
    if isinstance(data, dict) and data.get("type") == "error":
        raise error(deployment, data)
    content = data.get("content") if isinstance(data, dict) else None
    if not isinstance(content, list):
        raise garbage(deployment, "with an unexpected shape")
    reason = finish_reason(deployment, data.get("stop_reason"))
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    answered, json_text = False, None
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("name"), str):
                raise garbage(deployment, "a tool_use block without a name")
            arguments = block.get("input")
            if json_tool is not None:
                _forced(deployment, json_tool, block["name"], answered)
                answered, json_text = True, _json_answer(deployment, json_tool, arguments, reason)
                continue
            calls.append(
                {
                    "id": _call_id(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": block["name"],
                        "arguments": _dumps(deployment, arguments if arguments is not None else {}),
                    },
                }
            )
    if json_tool is not None:
        reason = _json_finish(deployment, reason, answered)
    answer: dict[str, Any] = {
        "role": "assistant",
        "content": json_text if answered else "".join(texts) if texts else None,
        "refusal": None,
    }
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


# -- streams ----------------------------------------------------------------------------
class AnthropicStream(TranslatedStream):
    """One stream's state: Anthropic's events in, OpenAI's chunks out (`chunks`), and
    whether `message_stop` has come (`finished`: without it the stream was cut)."""

    __slots__ = (
        "_blocks",
        "_calls",
        "_held",
        "_json",
        "_json_block",
        "_json_said",
        "_reason",
        "_usage",
    )

    def __init__(self, deployment: Deployment, *, json_tool: JsonTool | None = None) -> None:
        super().__init__(deployment)
        self._blocks: dict[int, str] = {}  # Anthropic's block index -> its type
        self._calls: dict[int, int] = {}  # a tool_use block's index -> OpenAI's call index
        self._usage: dict[str, Any] = {}  # message_start's, updated by message_delta's
        self._reason: str | None = None
        self._json = json_tool  # JSON mode: the forced tool, whose input is the content
        self._json_block: int | None = None  # the index of its block, once started
        self._held: list[str] = []  # a wrapped input's pieces, until message_delta
        self._json_said = False  # an input's piece sent as content (not wrapped)

    def chunks(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks one event becomes (none for pings, block stops, unknown events)."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            message = message if isinstance(message, dict) else {}
            self._name(message.get("id"))
            self._count_usage(message.get("usage"))
            return self._open()
        if kind == "content_block_start":
            return self._started(event)
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "message_delta":
            return self._end(event)
        if kind == "message_stop":
            if self._reason is None:
                raise garbage(self._deployment, "a stream without a stop reason")
            self.finished = True
            return []
        if kind == "error":
            raise error(self._deployment, event)
        return []

    def _started(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block")
        if not isinstance(block, dict):
            raise garbage(self._deployment, "a content block without a body")
        kind = block.get("type")
        index = event.get("index", len(self._blocks))
        if not isinstance(index, int):
            raise garbage(self._deployment, "a content block without an index")
        self._blocks[index] = kind if isinstance(kind, str) else ""
        if kind == "text":
            text = block.get("text")
            if not isinstance(text, str) or not text:
                return self._open()  # the empty opening of a text block
            return [*self._open(), self._chunk({"content": text})]
        if kind != "tool_use":
            return []  # thinking, server tools' blocks
        if not isinstance(block.get("name"), str):
            raise garbage(self._deployment, "a tool_use block without a name")
        if self._json is not None:
            return self._json_started(self._json, index, block)
        # The input streams as `input_json_delta`s; a start carrying it whole is taken too.
        given = block.get("input")
        arguments = _dumps(self._deployment, given) if isinstance(given, dict) and given else ""
        call = self._calls[index] = len(self._calls)
        piece = {
            "index": call,
            "id": _call_id(block.get("id")),
            "type": "function",
            "function": {"name": block["name"], "arguments": arguments},
        }
        return [*self._open(), self._chunk({"tool_calls": [piece]})]

    def _delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        index = event.get("index")
        kind = delta.get("type")
        if not isinstance(index, int) or index not in self._blocks:
            raise garbage(self._deployment, "a delta for a content block it had not started")
        if kind == "text_delta":
            text = delta.get("text")
            if self._blocks[index] != "text" or not isinstance(text, str):
                raise garbage(self._deployment, "a text delta outside a text block")
            return [*self._open(), self._chunk({"content": text})] if text else []
        if kind == "input_json_delta":
            piece = delta.get("partial_json")
            json_block = index == self._json_block
            if not (json_block or index in self._calls) or not isinstance(piece, str):
                raise garbage(self._deployment, "an input delta outside a tool_use block")
            if not piece:
                return []
            if json_block and self._json is not None:
                return self._json_piece(self._json, piece)
            call = {"index": self._calls[index], "function": {"arguments": piece}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking, signatures, citations

    def _count_usage(self, raw: Any) -> None:
        if isinstance(raw, dict):
            self._usage.update({name: value for name, value in raw.items() if value is not None})

    def _end(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        reason = finish_reason(self._deployment, delta.get("stop_reason"))
        self._count_usage(event.get("usage"))  # cumulative: its figures replace the start's
        chunks = self._open()
        if self._json is not None:
            answered = self._json_block is not None
            reason = _json_finish(self._deployment, reason, answered)
            text = None
            if answered and self._json.wrapped:
                text = _unwrapped(self._deployment, self._json, "".join(self._held), reason)
                self._held = []
            elif answered and not self._json_said and reason != "length":
                text = "{}"  # no input streamed: Anthropic's empty input
            if text:
                chunks.append(self._chunk({"content": text}))
        self._reason = reason
        chunks.append(self._chunk({}, reason))
        counted = usage(self._usage)
        if counted is not None:
            last = self._chunk({})
            last["choices"] = []
            last["usage"] = counted
            chunks.append(last)
        return chunks

    # -- JSON mode ----------------------------------------------------------------------
    def _json_started(
        self, tool: JsonTool, index: int, block: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """The forced tool's block starting: no tool call, its input is content."""
        _forced(self._deployment, tool, block["name"], self._json_block is not None)
        self._json_block = index
        given = block.get("input")
        if given is not None and not isinstance(given, dict):
            raise garbage(self._deployment, "the JSON tool's input not as an object")
        # The input streams as `input_json_delta`s; a start carrying it whole is taken too.
        whole = _dumps(self._deployment, given) if given else ""
        return [*self._open(), *self._json_piece(tool, whole)]

    def _json_piece(self, tool: JsonTool, piece: str) -> list[dict[str, Any]]:
        if tool.wrapped:
            self._held.append(piece)
            return []
        if not piece:
            return []
        self._json_said = True
        return [self._chunk({"content": piece})]
