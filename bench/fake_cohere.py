"""Cohere's Chat API v2 (``POST /v2/chat``) and Embed API v2 (``POST /v2/embed``) for the
fake upstream, as Cohere's OpenAPI document (cohere-ai/cohere-developer-experience,
``cohere-openapi.yaml``), its sample responses and the official SDK's types define them.

Chat requests: ``model`` and ``messages`` are required; messages are ``system``, ``user``,
``assistant`` (``tool_plan``, ``tool_calls``, ``content``) or ``tool`` (``tool_call_id``,
``content`` as a string or text/document blocks); ``tools`` are
``{"type": "function", "function": {"name", "description", "parameters"}}``;
``tool_choice`` is ``"REQUIRED"`` or ``"NONE"`` (nothing else: there is no named choice).
Checked as the service checks them (HTTP 400, Cohere's ``{"id", "message"}`` body): the
required fields, the roles, the ``tool_choice`` values, and that every tool message
answers a call of the assistant message before it.

Answers follow `bench.fake_tools`. A non-streamed answer is ``{"id", "finish_reason",
"message": {"role": "assistant", "tool_plan", "tool_calls"} | {"content": [{"type":
"text", "text"}]}, "usage": {"billed_units", "tokens"}}`` with ``finish_reason``
``TOOL_CALL`` or ``COMPLETE``.

A stream is SSE (``event: <type>`` and ``data: <event>``) when the request accepts
``text/event-stream``, else one JSON event a line (``application/stream+json``):
``message-start``; for calls ``tool-plan-delta``s, then per call ``tool-call-start``
(``delta.message.tool_calls`` is one object with the id and name), ``tool-call-delta``s
(argument pieces), ``tool-call-end``; for text ``content-start``, ``content-delta``s,
``content-end``; then ``message-end`` with the finish reason and usage. No terminator
event follows, as in Cohere's sample streams.

Behaviours honoured: ``status``/``fail_times`` (Cohere's error body), ``garbage``,
``slow``/``hang``/``delay_ms``/``chunk_delay_ms``, ``cut``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from bench.fake_tools import ARGUMENTS, Turn, decide, text_of, vector

if TYPE_CHECKING:
    from bench.fake_upstream import FakeUpstream

__all__ = ["CHAT_PATH", "EMBED_PATH", "serve_chat", "serve_embed"]

CHAT_PATH = "/v2/chat"
EMBED_PATH = "/v2/embed"
_JSON = "application/json"
_PIECE = re.compile(r"\S+\s*|\s+")
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_TOOL_CHOICES = frozenset({"REQUIRED", "NONE"})
MAX_TEXTS = 96  # texts per /v2/embed call


class _Invalid(Exception):
    """A request Cohere answers with 400."""


def _error(
    status: int, message: str, seq: int = 0, retry_after: float | str | None = None
) -> web.Response:
    body = orjson.dumps({"id": f"fake-cohere-error-{seq}", "message": message})
    response = web.Response(body=body, status=status, content_type=_JSON)
    if retry_after is not None:  # the `status` behaviour's hint, as the OpenAI fake sends it
        response.headers["Retry-After"] = (
            retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        )
    return response


def _read(data: Any) -> tuple[Turn, int]:
    """The request's reading and its prompt token count (words), or `_Invalid`."""
    if not isinstance(data, dict):
        raise _Invalid("invalid request: body must be a JSON object")
    if not isinstance(data.get("model"), str) or not data["model"]:
        raise _Invalid("invalid request: model must be specified")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Invalid("invalid request: messages must not be empty")
    choice = data.get("tool_choice")
    if choice is not None and choice not in _TOOL_CHOICES:
        raise _Invalid(
            f"invalid request: tool_choice must be one of REQUIRED, NONE, got {choice!r}"
        )
    functions: list[str] = []
    for tool in data.get("tools") or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _Invalid("invalid request: each tool must be a function with a name")
        functions.append(function["name"])
    if choice == "REQUIRED" and not functions:
        raise _Invalid("invalid request: tool_choice REQUIRED needs tools")

    words = 0
    last_user = ""
    pending: set[str] = set()  # calls of the last assistant message not yet answered
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            raise _Invalid(f"invalid request: messages[{i}].role must be one of {sorted(_ROLES)}")
        text = text_of(message.get("content"))
        words += len(text.split())
        if role == "user":
            last_user = text
        if role == "assistant":
            calls = message.get("tool_calls") or []
            pending = {str(c.get("id")) for c in calls if isinstance(c, dict)}
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in pending:
                raise _Invalid(
                    f"invalid request: messages[{i}].tool_call_id {call_id!r} does not match "
                    "a tool call of the preceding assistant message"
                )
            if message.get("content") in (None, "", []):
                raise _Invalid(f"invalid request: messages[{i}].content must not be empty")
            pending.discard(call_id)
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, text_of(message.get("content")))
    turn = Turn(
        functions=tuple(functions),
        last_user=last_user,
        results=tuple(results),
        forced=choice == "REQUIRED",
        disabled=choice == "NONE",
    )
    return turn, max(words, 1)


def _usage(prompt: int, output: int) -> dict[str, Any]:
    tokens = {"input_tokens": prompt, "output_tokens": output}
    return {"billed_units": dict(tokens), "tokens": tokens}


def _sse(data: dict[str, Any]) -> bytes:
    kind: str = data["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _line(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data) + b"\n"


async def serve_chat(
    upstream: FakeUpstream, request: web.BaseRequest, path: str
) -> web.StreamResponse:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _error(400, "invalid request: body is not valid JSON")
    model = data.get("model") if isinstance(data, dict) else None
    behaviour = upstream._record(request, path, model if isinstance(model, str) else "", raw)
    fails = behaviour is not None and upstream._fails(behaviour)
    await upstream._pace(behaviour)
    seq = upstream._next_id()
    if behaviour is not None:
        if fails:
            text = behaviour.message or f"fake upstream: injected HTTP {behaviour.status}"
            return _error(behaviour.status, text, seq, behaviour.retry_after)
        if behaviour.mode == "garbage":
            return web.Response(body=b'{"id": "x", "message": {oops', content_type=_JSON)
    try:
        turn, prompt = _read(data)
    except _Invalid as exc:
        return _error(400, str(exc), seq)
    answer = decide(turn)
    message_id = f"fake-cohere-{seq}"
    arguments = orjson.dumps(ARGUMENTS).decode()
    calls: list[dict[str, Any]] = [
        {
            "id": f"{name}_fake{seq}x{index}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        for index, name in enumerate(answer.calls)
    ]
    plan = f"I will use {', '.join(answer.calls)}." if calls else ""
    output = len(arguments.split()) * len(calls) if calls else len(answer.text.split())
    usage = _usage(prompt, output)
    finish = "TOOL_CALL" if calls else "COMPLETE"

    if not data.get("stream"):
        message: dict[str, Any] = {"role": "assistant"}
        if calls:
            message.update(tool_plan=plan, tool_calls=calls)
        else:
            message["content"] = [{"type": "text", "text": answer.text}]
        body = orjson.dumps(
            {"id": message_id, "finish_reason": finish, "message": message, "usage": usage}
        )
        if behaviour is not None and behaviour.mode == "cut":
            return await upstream._cut_body(request, body)
        return web.Response(body=body, content_type=_JSON)

    start = {
        "id": message_id,
        "type": "message-start",
        "delta": {
            "message": {
                "role": "assistant",
                "content": [],
                "tool_plan": "",
                "tool_calls": [],
                "citations": [],
            }
        },
    }
    # Cohere negotiates the stream's framing: SSE for `Accept: text/event-stream` (what its
    # SDKs and the v2 docs' curl examples send), newline-delimited JSON events otherwise
    # (the v1 reference documents that default; sample v2 streams fetched with
    # `accept: application/json` show the same lines).
    sse = "text/event-stream" in request.headers.get("Accept", "")
    _event = _sse if sse else _line
    headers = None if sse else {"Content-Type": "application/stream+json"}
    events: list[bytes] = []
    if calls:
        events += [
            _event({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": piece}}})
            for piece in _PIECE.findall(plan)
        ]
        for index, call in enumerate(calls):
            started = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            events.append(
                _event(
                    {
                        "type": "tool-call-start",
                        "index": index,
                        "delta": {"message": {"tool_calls": started}},
                    }
                )
            )
            events += [
                _event(
                    {
                        "type": "tool-call-delta",
                        "index": index,
                        "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}},
                    }
                )
                for piece in _PIECE.findall(arguments)
            ]
            events.append(_event({"type": "tool-call-end", "index": index}))
    else:
        events.append(
            _event(
                {
                    "type": "content-start",
                    "index": 0,
                    "delta": {"message": {"content": {"type": "text", "text": ""}}},
                }
            )
        )
        events += [
            _event(
                {
                    "type": "content-delta",
                    "index": 0,
                    "delta": {"message": {"content": {"text": piece}}},
                }
            )
            for piece in _PIECE.findall(answer.text)
        ]
        events.append(_event({"type": "content-end", "index": 0}))
    end = _event({"type": "message-end", "delta": {"finish_reason": finish, "usage": usage}})
    opening = (_event(start),)
    if headers is None:
        return await upstream._stream(request, opening, events, (end,), behaviour)
    return await upstream._stream(request, opening, events, (end,), behaviour, headers)


async def serve_embed(
    upstream: FakeUpstream, request: web.BaseRequest, path: str
) -> web.StreamResponse:
    """``{"model", "texts", "input_type", "embedding_types"}`` -> ``{"id", "embeddings":
    {"float": [[...]]}, "texts", "meta"}`` (v2 requires ``input_type`` and ``model``)."""
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _error(400, "invalid request: body is not valid JSON")
    model = data.get("model") if isinstance(data, dict) else None
    behaviour = upstream._record(request, path, model if isinstance(model, str) else "", raw)
    fails = behaviour is not None and upstream._fails(behaviour)
    await upstream._pace(behaviour)
    seq = upstream._next_id()
    if behaviour is not None and fails:
        message = behaviour.message or f"fake upstream: injected HTTP {behaviour.status}"
        return _error(behaviour.status, message, seq, behaviour.retry_after)
    texts = data.get("texts") if isinstance(data, dict) else None
    if not isinstance(model, str) or not model:
        return _error(400, "invalid request: model must be specified", seq)
    if not data.get("input_type"):
        return _error(400, "invalid request: input_type is required for embed v2", seq)
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or not texts:
        return _error(400, "invalid request: texts must be a non-empty list of strings", seq)
    if len(texts) > MAX_TEXTS:  # the schema's `maxItems`
        return _error(400, f"invalid request: at most {MAX_TEXTS} texts per call", seq)
    types = data.get("embedding_types") or ["float"]
    vectors = [vector(text) for text in texts]
    tokens = sum(len(text.split()) for text in texts)
    body = {
        "id": f"fake-cohere-embed-{seq}",
        "embeddings": {kind: vectors for kind in types if kind == "float"},
        "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        "response_type": "embeddings_by_type",
    }
    return web.Response(body=orjson.dumps(body), content_type=_JSON)
