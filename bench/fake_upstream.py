"""A fast fake LLM provider: a real aiohttp HTTP server speaking OpenAI's and Anthropic's wire
formats, with per-model fault injection, for the gateway's tests and its benchmark.

In-process (tests)::

    upstream = FakeUpstream()
    await upstream.start()              # in the running loop; listens on a free 127.0.0.1 port
    upstream.base_url                   # "http://127.0.0.1:PORT/v1"
    upstream.set_behaviour("m1", "status", status=429, retry_after=2)
    ...
    await upstream.stop()

or ``upstream, stop = run_in_thread()`` for a server on its own loop in a daemon thread.

As its own process (benchmark)::

    python -m bench.fake_upstream --port 9001 [--latency-ms 50]

Endpoints (each also without the ``/v1`` prefix): ``POST /v1/chat/completions``,
``POST /v1/embeddings``, ``POST /v1/messages`` (Anthropic), ``GET /v1/models``, ``GET /health``;
Gemini's ``POST /v1beta/models/{model}:generateContent`` (and ``streamGenerateContent``,
``batchEmbedContents``: `bench.fake_gemini`); Cohere's ``POST /v2/chat`` and ``POST /v2/embed``
(`bench.fake_cohere`); and the control API:
``POST /_control/behaviour`` (``{"model", "mode", ...params}``),
``POST /_control/reset``, ``GET /_control/stats``, ``GET /_control/last_request?model=M``.

Modes (per model; model ``"*"`` is the fallback for models without their own entry):
``ok``; ``slow`` (``delay_ms``, ``chunk_delay_ms``); ``status`` (``status``, ``retry_after``,
optional ``message``/``error_type``/``code``); ``fail_times`` (``count``, ``status``, same
extras); ``hang``; ``cut`` (``after_chunks``); ``garbage``; ``content_filter``; ``script``
(``turns``, below); ``sloppy`` (chat: OpenAI's format bent as some compatible servers bend it,
`bench.fake_quirks`). ``delay_ms`` and ``chunk_delay_ms`` are accepted by every mode. A chat request
with ``"logprobs": true`` gets OpenAI's ``logprobs`` object (one entry per streamed piece of text).

``script`` answers a multi-turn, tool-calling conversation from a list of turns, for agent tests::

    upstream.set_behaviour("m1", "script", turns=[
        {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
        {"content": "It is 42.", "usage": {"prompt_tokens": 30, "completion_tokens": 4}},
    ])                                  # or POST /_control/behaviour {"model", "mode", "turns"}

Each turn is ``{"content": str}`` or ``{"tool_calls": [{"name", "arguments": dict | str,
"id"?}]}`` (ids default to ``call_<turn>_<index>``), with an optional ``usage`` overriding the
counted tokens. The turn is chosen statelessly: the number of ``assistant`` messages in the
request (0 -> ``turns[0]``; past the end, the last turn again, so ``[{"tool_calls": [...]}]``
loops). A request with no ``tools`` or ``tool_choice: "none"`` gets the turn's ``content`` (or
"final answer") instead of its calls. Streamed in OpenAI's chunk shapes (the role, then per call
its id and name, then its arguments in pieces; ``include_usage`` honoured); ``delay_ms`` and
``chunk_delay_ms`` apply, so a test can cancel mid-turn. Chat completions only (``/messages``
answers 400); never cached, so the other modes' speed is untouched. Rules in `bench.fake_script`.

Speed: a request's answer is derived from its raw body, and what can be precomputed from that body
(serialised response minus id and timestamp, stream chunks) is cached by the body bytes, so
repeated requests cost a dict lookup and a few byte concatenations. No pydantic, orjson only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hashlib
import logging
import re
import signal
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from bench import fake_anthropic, fake_cohere, fake_gemini
from bench.fake_quirks import sloppy
from bench.fake_script import ScriptTurn, parse_turns
from bench.fake_script import answer as script_answer
from bench.fake_tools import decide

__all__ = ["MODES", "FakeUpstream", "run_in_thread"]

MODES = frozenset(
    {
        "ok",
        "slow",
        "status",
        "fail_times",
        "hang",
        "cut",
        "garbage",
        "content_filter",
        "script",
        "sloppy",
    }
)
_COMMON_PARAMS = frozenset({"delay_ms", "chunk_delay_ms"})
_ERROR_PARAMS = frozenset({"status", "retry_after", "message", "error_type", "code"})
_MODE_PARAMS: dict[str, frozenset[str]] = {
    "ok": _COMMON_PARAMS,
    "slow": _COMMON_PARAMS,
    "status": _COMMON_PARAMS | _ERROR_PARAMS,
    "fail_times": _COMMON_PARAMS | _ERROR_PARAMS | {"count"},
    "hang": _COMMON_PARAMS,
    "cut": _COMMON_PARAMS | {"after_chunks"},
    "garbage": _COMMON_PARAMS,
    "content_filter": _COMMON_PARAMS,
    "script": _COMMON_PARAMS | {"turns"},
    "sloppy": _COMMON_PARAMS,
}

_MAX_CACHED = 4096  # distinct request bodies whose answers are kept
_MAX_CACHED_BODY = 65536  # larger bodies are answered without caching
_MAX_CONTENT = 200
_EMBED_DIMS = 8
_DEFAULT_MODEL = "fake-model"

_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_DONE = b"data: [DONE]\n\n"
_GARBAGE_JSON = b'{"id": "chatcmpl-garbage", "object": "chat.completion", "choices": [{oops'
_GARBAGE_SSE = b"data: {not json\n\ndata: {still not json\n\n"
_GARBAGE_ANTHROPIC_SSE = b"event: message_start\ndata: {not json\n\n"

_PIECE = re.compile(r"\S+\s*|\s+")
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
_TOOL_CALL_ID = "call_fake_1"
_TOOL_ARGUMENTS = '{"city": "Paris"}'

_OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

_logger = logging.getLogger("bench.fake_upstream")


class _BadRequest(Exception):
    """The request body is not something the fake provider can answer."""


# --------------------------------------------------------------------------- behaviours


@dataclass(slots=True)
class _Behaviour:
    mode: str
    delay: float = 0.0  # seconds, before the answer
    chunk_delay: float = 0.0  # seconds, between stream chunks
    status: int = 500
    retry_after: float | str | None = None  # a str is sent as is (odd values, for tests)
    message: str | None = None
    error_type: str | None = None
    code: str | None = None
    remaining: int = 0  # fail_times: failures still to serve
    after_chunks: int = 1  # cut: content chunks sent before the connection is dropped
    turns: tuple[ScriptTurn, ...] = ()  # script: the scripted answers

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"mode": self.mode}
        if self.delay:
            info["delay_ms"] = self.delay * 1000
        if self.chunk_delay:
            info["chunk_delay_ms"] = self.chunk_delay * 1000
        if self.mode in ("status", "fail_times"):
            info["status"] = self.status
            info["retry_after"] = self.retry_after
        if self.mode == "fail_times":
            info["remaining"] = self.remaining
        if self.mode == "cut":
            info["after_chunks"] = self.after_chunks
        if self.mode == "script":
            info["turns"] = len(self.turns)
        return info


def _make_behaviour(mode: str, params: dict[str, Any]) -> _Behaviour:
    allowed = _MODE_PARAMS.get(mode)
    if allowed is None:
        raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"mode {mode!r} takes no parameter(s) {sorted(unknown)}")
    b = _Behaviour(mode=mode)
    b.delay = float(params.get("delay_ms", 0)) / 1000
    b.chunk_delay = float(params.get("chunk_delay_ms", 0)) / 1000
    b.status = int(params.get("status", 500))
    if not 400 <= b.status <= 599:
        raise ValueError(f"status must be an HTTP error status, not {b.status}")
    if params.get("retry_after") is not None:
        value = params["retry_after"]
        b.retry_after = value if isinstance(value, str) else float(value)
    for key in ("message", "error_type", "code"):
        if params.get(key) is not None:
            setattr(b, key, str(params[key]))
    b.remaining = int(params.get("count", 1))
    b.after_chunks = int(params.get("after_chunks", 1))
    if b.delay < 0 or b.chunk_delay < 0 or b.remaining < 0 or b.after_chunks < 0:
        raise ValueError("delays, count and after_chunks must not be negative")
    if mode == "script":
        b.turns = parse_turns(params.get("turns"))
    return b


# --------------------------------------------------------------------------- request parsing


def _text(content: Any) -> str:
    """Plain text of an OpenAI or Anthropic message content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
                elif "content" in part:  # Anthropic tool_result blocks
                    parts.append(_text(part["content"]))
        return " ".join(parts)
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _parse(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequest("request body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("you must provide a model parameter")
    return data


def _conversation(data: dict[str, Any]) -> tuple[str, int, bool]:
    """(reply text, prompt tokens, wants a tool call) for a chat or messages request."""
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise _BadRequest("'messages' must be a list")
    prompt_tokens = _words(_text(data.get("system")))
    last_user = ""
    for message in messages:
        if not isinstance(message, dict):
            raise _BadRequest("each message must be an object")
        text = _text(message.get("content"))
        prompt_tokens += _words(text)
        if message.get("role") == "user":
            last_user = text
    reply = ("echo: " + last_user)[:_MAX_CONTENT]
    tools = data.get("tools")
    wants_tool = bool(tools) and _WEATHER.search(last_user) is not None
    return reply, max(prompt_tokens, 1), wants_tool


def _first_tool_name(tools: Any, anthropic: bool) -> str:
    tool = tools[0] if isinstance(tools, list) and tools else {}
    if not isinstance(tool, dict):
        return "tool"
    if anthropic:
        name = tool.get("name")
    else:
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else tool.get("name")
    return name if isinstance(name, str) else "tool"


def _logprobs(pieces: list[str]) -> dict[str, Any]:
    """OpenAI's `logprobs` object for `pieces` (a fixed log probability per token)."""
    content = [
        {"token": p, "logprob": -0.25, "bytes": list(p.encode()), "top_logprobs": []}
        for p in pieces
    ]
    return {"content": content, "refusal": None}


def _tail(obj: dict[str, Any]) -> bytes:
    """A JSON object's bytes without the opening brace, to follow a templated head."""
    return orjson.dumps(obj)[1:]


# --------------------------------------------------------------------------- precomputed answers


@dataclass(slots=True)
class _ChatPlan:
    """Everything about one chat request body's answer except the id and timestamp."""

    model: str
    stream: bool
    body: bytes = b""  # non-stream: the object's tail after the id and created
    body_filtered: bytes = b""
    role: tuple[bytes, ...] = ()  # stream chunk tails, each ending with "}\n\n"
    pieces: tuple[bytes, ...] = ()
    finish: tuple[bytes, ...] = ()
    finish_filtered: tuple[bytes, ...] = ()


def _chat_plan(data: dict[str, Any]) -> _ChatPlan:
    reply, prompt_tokens, wants_tool = _conversation(data)
    calls: tuple[tuple[str, str, str], ...] = ()
    if wants_tool:
        tool_name = _first_tool_name(data.get("tools"), anthropic=False)
        calls = ((_TOOL_CALL_ID, tool_name, _TOOL_ARGUMENTS),)
    completion_tokens = _words(_TOOL_ARGUMENTS if wants_tool else reply)
    return _render_chat(data, reply, calls, prompt_tokens, completion_tokens, logprobs=True)


def _script_plan(data: dict[str, Any], turns: tuple[ScriptTurn, ...]) -> _ChatPlan:
    """The `script` mode's answer (see `bench.fake_script`); never cached."""
    _, prompt_tokens, _ = _conversation(data)  # validates the messages, counts the prompt
    scripted = script_answer(data, turns)
    reply = scripted.content or ""
    arguments = " ".join(arguments for _, _, arguments in scripted.tool_calls)
    completion_tokens = _words(arguments if scripted.tool_calls else reply)
    if scripted.prompt_tokens is not None:
        prompt_tokens = scripted.prompt_tokens
    if scripted.completion_tokens is not None:
        completion_tokens = scripted.completion_tokens
    return _render_chat(
        data, reply, scripted.tool_calls, prompt_tokens, completion_tokens, logprobs=False
    )


def _render_chat(
    data: dict[str, Any],
    reply: str,
    calls: tuple[tuple[str, str, str], ...],
    prompt_tokens: int,
    completion_tokens: int,
    *,
    logprobs: bool,
) -> _ChatPlan:
    """The answer in OpenAI's wire format: text `reply`, or `calls` as (id, name, arguments);
    token counts are one choice's. `logprobs`: honour the request's ``"logprobs": true``."""
    model: str = data["model"]
    n = data.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= 128:
        raise _BadRequest("'n' must be an integer between 1 and 128")
    stream = bool(data.get("stream"))
    completion_tokens *= n
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    finish_reason = "tool_calls" if calls else "stop"
    plan = _ChatPlan(model=model, stream=stream)
    pieces = _PIECE.findall(reply)
    logprobs = logprobs and data.get("logprobs") is True and not calls

    if not stream:
        message: dict[str, Any] = {"role": "assistant", "content": reply, "refusal": None}
        if calls:
            message["content"] = None
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
                for call_id, name, args in calls
            ]

        def body(finish: str) -> bytes:
            choices = [
                {
                    "index": i,
                    "message": message,
                    "logprobs": _logprobs(pieces) if logprobs else None,
                    "finish_reason": finish,
                }
                for i in range(n)
            ]
            return _tail(
                {"object": "chat.completion", "model": model, "choices": choices, "usage": usage}
            )

        plan.body = body(finish_reason)
        plan.body_filtered = body("content_filter")
        return plan

    options = data.get("stream_options")
    include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunks(
        deltas: list[tuple[dict[str, Any], str | None]], with_logprobs: bool = False
    ) -> tuple[bytes, ...]:
        return tuple(
            _tail(
                {
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [
                        {
                            "index": i,
                            "delta": delta,
                            "logprobs": _logprobs([delta["content"]]) if with_logprobs else None,
                            "finish_reason": finish,
                        }
                    ],
                    **extra,
                }
            )
            + b"\n\n"
            for delta, finish in deltas
            for i in range(n)
        )

    if calls:
        plan.role = chunks([({"role": "assistant", "content": None}, None)])
        deltas: list[tuple[dict[str, Any], str | None]] = []
        for index, (call_id, name, args) in enumerate(calls):
            opening = {"index": index, "id": call_id, "type": "function"}
            function = {"name": name, "arguments": ""}
            deltas.append(({"tool_calls": [{**opening, "function": function}]}, None))
            deltas += [
                ({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None)
                for piece in _PIECE.findall(args)
            ]
        plan.pieces = chunks(deltas)
    else:
        plan.role = chunks([({"role": "assistant", "content": ""}, None)])
        plan.pieces = chunks([({"content": piece}, None) for piece in pieces], logprobs)
    usage_chunk: tuple[bytes, ...] = ()
    if include_usage:
        usage_chunk = (
            _tail(
                {
                    "object": "chat.completion.chunk",
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
            + b"\n\n",
        )
    plan.finish = chunks([({}, finish_reason)]) + usage_chunk
    plan.finish_filtered = chunks([({}, "content_filter")]) + usage_chunk
    return plan


@dataclass(slots=True)
class _MessagesPlan:
    """One Anthropic messages request body's answer, except the message id."""

    model: str
    stream: bool
    body: bytes = b""
    body_refused: bytes = b""
    start: bytes = b""  # message_start's tail after the id, ending with "}}\n\n"
    opening: tuple[bytes, ...] = ()
    deltas: tuple[bytes, ...] = ()
    closing: tuple[bytes, ...] = ()
    closing_refused: tuple[bytes, ...] = ()


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _messages_plan(data: dict[str, Any]) -> _MessagesPlan:
    """Tool use follows `bench.fake_tools` (read by `bench.fake_anthropic`): one
    ``tool_use`` block per call (ids ``toolu_fake_1``, ``toolu_fake_2``, ...), streamed as
    a ``content_block_start`` with empty ``input`` then ``input_json_delta`` pieces."""
    model: str = data["model"]
    _, input_tokens, _ = _conversation(data)  # validates the messages, counts the prompt
    messages = data["messages"]
    last_user = next(
        (_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    try:
        answer = decide(fake_anthropic.turn(data, last_user))
    except fake_anthropic.Invalid as exc:
        raise _BadRequest(str(exc)) from None
    stream = bool(data.get("stream"))
    uses = [(f"toolu_fake_{i + 1}", name) for i, name in enumerate(answer.calls)]
    output_tokens = _words(_TOOL_ARGUMENTS) * len(uses) if uses else _words(answer.text)
    stop_reason = "tool_use" if uses else "end_turn"
    plan = _MessagesPlan(model=model, stream=stream)
    arguments = orjson.loads(_TOOL_ARGUMENTS)

    if not stream:
        blocks: list[dict[str, Any]] = [
            {"type": "tool_use", "id": use_id, "name": name, "input": arguments}
            for use_id, name in uses
        ] or [{"type": "text", "text": answer.text}]

        def body(reason: str) -> bytes:
            return _tail(
                {
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                }
            )

        plan.body = body(stop_reason)
        plan.body_refused = body("refusal")
        return plan

    plan.start = (
        _tail(
            {
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            }
        )
        + b"}\n\n"
    )

    def block_events(
        index: int, start: dict[str, Any], deltas: list[dict[str, Any]]
    ) -> list[bytes]:
        return [
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            ),
            *(
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": d},
                )
                for d in deltas
            ),
            _event("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]

    if uses:
        json_deltas = [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in _PIECE.findall(_TOOL_ARGUMENTS)
        ]
        events = [
            event
            for index, (use_id, name) in enumerate(uses)
            for event in block_events(
                index, {"type": "tool_use", "id": use_id, "name": name, "input": {}}, json_deltas
            )
        ]
    else:
        text_deltas = [{"type": "text_delta", "text": p} for p in _PIECE.findall(answer.text)]
        events = block_events(0, {"type": "text", "text": ""}, text_deltas)
    # The first block's start, then a ping, as Anthropic sends them; the rest are content
    # (so `cut` mode can stop mid-block) and the closing carries the last block's stop.
    plan.opening = (events[0], _event("ping", {"type": "ping"}))
    plan.deltas = tuple(events[1:-1])

    def closing(reason: str) -> tuple[bytes, ...]:
        return (
            events[-1],
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        )

    plan.closing = closing(stop_reason)
    plan.closing_refused = closing("refusal")
    return plan


@dataclass(slots=True)
class _EmbeddingsPlan:
    model: str
    body: bytes


def _embedding(text: str) -> list[float]:
    digest = hashlib.blake2b(text.encode(), digest_size=2 * _EMBED_DIMS).digest()
    return [round(v / 32767.5 - 1.0, 6) for v in struct.unpack(f"<{_EMBED_DIMS}H", digest)]


def _embeddings_plan(data: dict[str, Any]) -> _EmbeddingsPlan:
    model: str = data["model"]
    raw = data.get("input")
    inputs: list[Any]
    if isinstance(raw, str) or (
        isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)
    ):
        inputs = [raw]
    elif isinstance(raw, list) and raw:
        inputs = raw
    else:
        raise _BadRequest("'input' must be a non-empty string or list")
    as_base64 = data.get("encoding_format") == "base64"
    items = []
    tokens = 0
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            text, tokens = item, tokens + _words(item)
        elif isinstance(item, list) and all(isinstance(t, int) for t in item):
            text, tokens = " ".join(map(str, item)), tokens + len(item)
        else:
            raise _BadRequest(f"input[{i}] must be a string or a list of token ids")
        vector = _embedding(text)
        embedding: Any = vector
        if as_base64:
            embedding = base64.b64encode(struct.pack(f"<{_EMBED_DIMS}f", *vector)).decode()
        items.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = max(tokens, 1)
    body = orjson.dumps(
        {
            "object": "list",
            "data": items,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
    return _EmbeddingsPlan(model=model, body=body)


# --------------------------------------------------------------------------- responses


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=_JSON)


def _error(
    anthropic: bool,
    status: int,
    message: str,
    *,
    retry_after: float | str | None = None,
    error_type: str | None = None,
    code: str | None = None,
) -> web.Response:
    if anthropic:
        kind = error_type or _ANTHROPIC_ERRORS.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        default_type, default_code = _OPENAI_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        payload = {
            "error": {
                "message": message,
                "type": error_type or default_type,
                "param": None,
                "code": code if code is not None else default_code,
            }
        }
    response = _json(payload, status)
    if isinstance(retry_after, str):
        response.headers["Retry-After"] = retry_after
    elif retry_after is not None:
        value = int(retry_after) if retry_after == int(retry_after) else retry_after
        response.headers["Retry-After"] = str(value)
    return response


def _injected_error(anthropic: bool, b: _Behaviour) -> web.Response:
    return _error(
        anthropic,
        b.status,
        b.message or f"fake upstream: injected HTTP {b.status}",
        retry_after=b.retry_after,
        error_type=b.error_type,
        code=b.code,
    )


def _close_transport(request: web.BaseRequest) -> None:
    """Drop the connection after what was written is flushed: no terminating chunk."""
    transport = request.transport
    if transport is not None:
        transport.close()


# --------------------------------------------------------------------------- the server


_Handler = Callable[[web.BaseRequest, str], Coroutine[Any, Any, web.StreamResponse]]


class FakeUpstream:
    """The fake provider. Create anywhere; `start`/`stop` inside the loop that serves it."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, latency_ms: float = 0) -> None:
        self.host = host
        self.port = port
        self.latency = max(float(latency_ms), 0.0) / 1000
        self._runner: web.ServerRunner | None = None
        self._never: asyncio.Event | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._behaviours: dict[str, _Behaviour] = {}
        self._calls: dict[str, int] = {}
        self._last: dict[str, tuple[str, str, bytes, CIMultiDictProxy[str]]] = {}
        self._models: dict[str, None] = {}
        self._total = 0
        self._in_flight = 0
        self._cancelled = 0
        self._seq = 0
        self._chat_cache: dict[bytes, _ChatPlan] = {}
        self._messages_cache: dict[bytes, _MessagesPlan] = {}
        self._embeddings_cache: dict[bytes, _EmbeddingsPlan] = {}
        self._api: dict[str, _Handler] = {
            "/chat/completions": self._chat,
            "/messages": self._messages,
            "/embeddings": self._embeddings,
            fake_cohere.CHAT_PATH: functools.partial(fake_cohere.serve_chat, self),
            fake_cohere.EMBED_PATH: functools.partial(fake_cohere.serve_embed, self),
        }

    # ---- lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("FakeUpstream is already started")
        self._never = asyncio.Event()
        self._stopping = False
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=4096, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping = True
        for task in list(self._tasks):  # hanging and slow answers: no need to wait for them
            task.cancel()
        await runner.cleanup()

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, ``http://HOST:PORT/v1`` (every route also works without /v1)."""
        return f"{self.root_url}/v1"

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # ---- control

    def set_behaviour(self, model: str, mode: str, **params: Any) -> None:
        """Set how requests for `model` are answered (``"*"``: every model without its own)."""
        if mode == "ok" and not params:
            self._behaviours.pop(model, None)
        else:
            self._behaviours[model] = _make_behaviour(mode, params)

    def reset(self) -> None:
        """Forget all behaviours, counters and recorded requests."""
        self._behaviours.clear()
        self._calls.clear()
        self._last.clear()
        self._models.clear()
        self._total = 0
        self._cancelled = 0

    def calls(self, model: str | None = None) -> int:
        """Requests received for `model` (all models when None), whatever their outcome."""
        if model is None:
            return self._total
        return self._calls.get(model, 0)

    @property
    def total_calls(self) -> int:
        return self._total

    @property
    def cancelled(self) -> int:
        """Requests whose client went away before the answer was complete."""
        return self._cancelled

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def last_request(self, model: str) -> dict[str, Any] | None:
        """The most recent request for `model`: ``{"method", "path", "body", "headers"}``.

        ``body`` is the parsed JSON; ``headers`` has lower-cased names (repeats joined by ", ").
        """
        entry = self._last.get(model)
        if entry is None:
            return None
        method, path, body, headers = entry
        names: dict[str, str] = {}
        for name, value in headers.items():
            key = name.lower()
            names[key] = f"{names[key]}, {value}" if key in names else value
        return {"method": method, "path": path, "body": orjson.loads(body), "headers": names}

    def stats(self) -> dict[str, Any]:
        return {
            "calls": dict(self._calls),
            "total_calls": self._total,
            "in_flight": self._in_flight,
            "cancelled": self._cancelled,
            "behaviours": {m: b.describe() for m, b in list(self._behaviours.items())},
        }

    # ---- dispatch

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path
        query = path.find("?")
        if query >= 0:
            path = path[:query]
        if path.startswith("/v1/"):
            path = path[3:]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        method = request.method
        handler = self._api.get(path)
        if handler is None and fake_gemini.route(path) is not None:
            handler = functools.partial(fake_gemini.serve, self)
        if handler is not None:
            if method != "POST":
                return _error(path == "/messages", 405, f"use POST for {path}")
            return await self._serve(handler, request, path)
        if path.startswith("/_control/"):
            return await self._control(request, path[10:], method)
        if method == "GET" and path == "/models":
            models = list(self._models) or [_DEFAULT_MODEL]
            data = [
                {
                    "id": m,
                    "object": "model",
                    "type": "model",
                    "created": 0,
                    "owned_by": "fake-upstream",
                    "display_name": m,
                }
                for m in models
            ]
            return _json({"object": "list", "data": data, "has_more": False})
        if path == "/health" or path == "/":
            return web.Response(text="ok")
        return _error(False, 404, f"fake upstream: no route for {method} {request.raw_path}")

    async def _serve(
        self, handler: _Handler, request: web.BaseRequest, path: str
    ) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._in_flight += 1
        try:
            return await handler(request, path)
        except asyncio.CancelledError:
            if not self._stopping:
                self._cancelled += 1
            raise
        finally:
            self._in_flight -= 1
            self._tasks.discard(task)

    def _record(
        self, request: web.BaseRequest, path: str, model: str, body: bytes
    ) -> _Behaviour | None:
        """Count the call, remember it, and return the model's behaviour (None: plain ok)."""
        self._total += 1
        calls = self._calls
        if model in calls:
            calls[model] += 1
        else:
            calls[model] = 1
            self._models[model] = None
        self._last[model] = (request.method, request.raw_path, body, request.headers)
        if not self._behaviours:
            return None
        behaviours = self._behaviours
        return behaviours.get(model) or behaviours.get("*")

    async def _pace(self, b: _Behaviour | None) -> None:
        """Apply global latency and the behaviour's delay; hang forever for ``hang``."""
        delay = self.latency
        if b is not None:
            delay += b.delay
        if delay > 0:
            await asyncio.sleep(delay)
        if b is not None and b.mode == "hang":
            assert self._never is not None
            await self._never.wait()  # never set: only cancellation ends it

    @staticmethod
    def _fails(b: _Behaviour) -> bool:
        if b.mode == "status":
            return True
        if b.mode == "fail_times" and b.remaining > 0:
            b.remaining -= 1
            return True
        return False

    def _next_id(self) -> int:
        self._seq += 1
        return self._seq

    # ---- OpenAI chat completions

    async def _chat(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        raw = await request.read()
        plan = self._chat_cache.get(raw)
        if plan is None:
            try:
                plan = _chat_plan(_parse(raw))
            except _BadRequest as exc:
                return _error(False, 400, str(exc))
            self._remember(self._chat_cache, raw, plan)
        b = self._record(request, path, plan.model, raw)
        fails = b is not None and self._fails(b)
        await self._pace(b)
        if b is not None:
            if fails:
                return _injected_error(False, b)
            if b.mode == "garbage":
                if plan.stream:
                    return await self._stream(request, (_GARBAGE_SSE, _DONE), (), (), None)
                return web.Response(body=_GARBAGE_JSON, content_type=_JSON)
            if b.mode == "script":
                plan = _script_plan(orjson.loads(raw), b.turns)
            elif b.mode == "sloppy":  # OpenAI's format bent as real servers do (`fake_quirks`)
                plan = sloppy(plan)
        filtered = b is not None and b.mode == "content_filter"
        seq = self._next_id()
        created = int(time.time())
        if not plan.stream:
            head = b'{"id":"chatcmpl-fake-%d","created":%d,' % (seq, created)
            body = head + (plan.body_filtered if filtered else plan.body)
            if b is not None and b.mode == "cut":
                return await self._cut_body(request, body)
            return web.Response(body=body, content_type=_JSON)
        head = b'data: {"id":"chatcmpl-fake-%d","created":%d,' % (seq, created)
        return await self._stream(
            request,
            [head + t for t in plan.role],
            [head + t for t in plan.pieces],
            [head + t for t in (plan.finish_filtered if filtered else plan.finish)] + [_DONE],
            b,
        )

    # ---- Anthropic messages

    async def _messages(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        raw = await request.read()
        plan = self._messages_cache.get(raw)
        if plan is None:
            try:
                plan = _messages_plan(_parse(raw))
            except _BadRequest as exc:
                return _error(True, 400, str(exc))
            self._remember(self._messages_cache, raw, plan)
        b = self._record(request, path, plan.model, raw)
        fails = b is not None and self._fails(b)
        await self._pace(b)
        if b is not None:
            if fails:
                return _injected_error(True, b)
            if b.mode == "garbage":
                if plan.stream:
                    return await self._stream(request, (_GARBAGE_ANTHROPIC_SSE,), (), (), None)
                return web.Response(body=_GARBAGE_JSON, content_type=_JSON)
            if b.mode == "script":
                return _error(True, 400, "fake upstream: script mode speaks OpenAI chat only")
        refused = b is not None and b.mode == "content_filter"
        seq = self._next_id()
        if not plan.stream:
            body = b'{"id":"msg_fake_%d",' % seq + (plan.body_refused if refused else plan.body)
            if b is not None and b.mode == "cut":
                return await self._cut_body(request, body)
            return web.Response(body=body, content_type=_JSON)
        start = (
            b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_fake_%d",'
            % seq
            + plan.start
        )
        return await self._stream(
            request,
            (start, *plan.opening),
            plan.deltas,
            plan.closing_refused if refused else plan.closing,
            b,
        )

    # ---- OpenAI embeddings

    async def _embeddings(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        raw = await request.read()
        plan = self._embeddings_cache.get(raw)
        if plan is None:
            try:
                plan = _embeddings_plan(_parse(raw))
            except _BadRequest as exc:
                return _error(False, 400, str(exc))
            self._remember(self._embeddings_cache, raw, plan)
        b = self._record(request, path, plan.model, raw)
        fails = b is not None and self._fails(b)
        await self._pace(b)
        if b is not None:
            if fails:
                return _injected_error(False, b)
            if b.mode == "garbage":
                return web.Response(body=_GARBAGE_JSON, content_type=_JSON)
            if b.mode == "cut":
                return await self._cut_body(request, plan.body)
        return web.Response(body=plan.body, content_type=_JSON)

    # ---- writing

    @staticmethod
    def _remember(cache: dict[bytes, Any], raw: bytes, plan: Any) -> None:
        if len(raw) <= _MAX_CACHED_BODY:
            if len(cache) >= _MAX_CACHED:
                cache.clear()
            cache[raw] = plan

    async def _cut_body(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        """Announce the whole body's length, send half of it, then drop the connection."""
        response = web.StreamResponse(headers={"Content-Type": _JSON})
        response.content_length = len(body)
        try:
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
        except ConnectionError:
            self._cancelled += 1
            return response
        _close_transport(request)
        return response

    async def _stream(
        self,
        request: web.BaseRequest,
        opening: tuple[bytes, ...] | list[bytes],
        content: tuple[bytes, ...] | list[bytes],
        closing: tuple[bytes, ...] | list[bytes],
        b: _Behaviour | None,
        headers: dict[str, str] = _SSE_HEADERS,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        chunk_delay = b.chunk_delay if b is not None else 0.0
        cut_after = b.after_chunks if b is not None and b.mode == "cut" else None
        cut = cut_after is not None
        try:
            await response.prepare(request)
            if not cut and not chunk_delay:
                await response.write(b"".join((*opening, *content, *closing)))
            else:
                if cut_after is not None:
                    chunks = [*opening, *content[:cut_after]]
                else:
                    chunks = [*opening, *content, *closing]
                for i, chunk in enumerate(chunks):
                    if i and chunk_delay:
                        await asyncio.sleep(chunk_delay)
                    await response.write(chunk)
                if cut:
                    _close_transport(request)
                    return response
            await response.write_eof()
        except ConnectionError:
            self._cancelled += 1
        return response

    # ---- control API over HTTP

    async def _control(self, request: web.BaseRequest, action: str, method: str) -> web.Response:
        if method == "GET" and action == "stats":
            return _json(self.stats())
        if method == "GET" and action == "last_request":
            model = request.query.get("model", "")
            return _json(self.last_request(model))
        if method == "POST" and action == "reset":
            self.reset()
            return _json({"ok": True})
        if method == "POST" and action == "behaviour":
            try:
                data = orjson.loads(await request.read())
                if not isinstance(data, dict):
                    raise ValueError("body must be a JSON object")
                model = data.pop("model")
                mode = data.pop("mode", "ok")
                if not isinstance(model, str) or not isinstance(mode, str):
                    raise ValueError("'model' and 'mode' must be strings")
                self.set_behaviour(model, mode, **data)
            except (ValueError, KeyError, TypeError) as exc:
                return _json({"error": f"bad behaviour: {exc!r}"}, 400)
            return _json({"ok": True})
        return _json({"error": f"no control action {method} {action}"}, 404)


# --------------------------------------------------------------------------- threads and CLI


def run_in_thread(**kwargs: Any) -> tuple[FakeUpstream, Callable[[], None]]:
    """Start a FakeUpstream on its own event loop in a daemon thread.

    Returns the server (already listening) and an idempotent function that stops it and joins
    the thread. `kwargs` go to `FakeUpstream`.
    """
    upstream = FakeUpstream(**kwargs)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(upstream.start())
        except BaseException as exc:
            failure.append(exc)
            started.set()
            loop.close()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=serve, name="fake-upstream", daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("fake upstream did not start within 30 s")
    if failure:
        thread.join(5)
        raise failure[0]

    lock = threading.Lock()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        with lock:
            if stopped:
                return
            stopped = True
        asyncio.run_coroutine_threadsafe(upstream.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)

    return upstream, stop


async def _serve_forever(host: str, port: int, latency_ms: float) -> None:
    upstream = FakeUpstream(host=host, port=port, latency_ms=latency_ms)
    await upstream.start()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    try:
        await done.wait()
    finally:
        await upstream.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fake_upstream", description="Fake OpenAI/Anthropic upstream."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="added before every answer's first byte"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is in the dev requirements
        asyncio.run(_serve_forever(args.host, args.port, args.latency_ms))
    else:
        uvloop.run(_serve_forever(args.host, args.port, args.latency_ms))


if __name__ == "__main__":
    main()
