"""Google's Gemini API for the fake upstream: ``generateContent``, ``streamGenerateContent``
(``?alt=sse``), ``batchEmbedContents`` and ``embedContent``, as the REST reference
(ai.google.dev/api) and the official SDK's types (google-genai) define them.

Routes: ``POST /v1beta/models/{model}:{method}`` (also ``/v1/...``), so a deployment's
``api_base`` is the fake's root URL plus ``/v1beta``, as Google's is
``https://generativelanguage.googleapis.com/v1beta``.

What is checked as the real service checks it (an HTTP 400 in Google's error shape,
``{"error": {"code", "message", "status": "INVALID_ARGUMENT"}}``):
- unknown field names, at the top level and in ``generationConfig``, ``toolConfig``,
  ``functionCallingConfig``, contents and parts (the service's proto parser rejects them:
  ``Invalid JSON payload received. Unknown name "x"``); either spelling of a field is
  accepted (``toolConfig`` or ``tool_config``), as proto JSON allows;
- roles: ``user`` or ``model``;
- a turn answering function calls carries as many ``functionResponse`` parts as the
  model turn before it has ``functionCall`` parts.

Answers follow `bench.fake_tools`: function calls as ``functionCall`` parts (all of one
turn's calls in one candidate; no ``id``, which the Gemini API leaves unset), with
``finishReason: "STOP"`` as Gemini sends it after calls too; text otherwise. A stream is
SSE, ``data: <GenerateContentResponse>`` events separated by CRLF CRLF, text in pieces,
calls whole, every event with ``usageMetadata`` (the prompt's count; the last one adds the
candidates'); no terminator event.

Behaviours (`FakeUpstream.set_behaviour`, by model name) honoured here: ``status`` and
``fail_times`` (Google's error shape; ``retry_after`` as its ``RetryInfo`` detail),
``garbage``, ``content_filter`` (``finishReason: "SAFETY"``),
``slow``/``hang``/``delay_ms``/``chunk_delay_ms`` and ``cut``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from bench.fake_tools import ARGUMENTS, Turn, decide, text_of, vector

if TYPE_CHECKING:
    from bench.fake_upstream import FakeUpstream

__all__ = ["route", "serve"]

_ROUTE = re.compile(
    r"^/v1(?:beta)?/models/([^/:]+):"
    r"(generateContent|streamGenerateContent|batchEmbedContents|embedContent)$"
)
_JSON = "application/json"
_PIECE = re.compile(r"\S+\s*|\s+")
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Field names (snake_case; camelCase is read as its snake_case twin), from google-genai's
# types and the REST reference. Vertex-only names are included: the fake checks the
# spelling of names, not which of Google's two services defines them.
_REQUEST = frozenset(
    {
        "model",
        "contents",
        "tools",
        "tool_config",
        "safety_settings",
        "system_instruction",
        "generation_config",
        "cached_content",
        "labels",
    }
)
_GENERATION_CONFIG = frozenset(
    {
        "stop_sequences",
        "response_mime_type",
        "response_schema",
        "response_json_schema",
        "response_modalities",
        "candidate_count",
        "max_output_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_logprobs",
        "logprobs",
        "enable_enhanced_civic_answers",
        "speech_config",
        "thinking_config",
        "image_config",
        "media_resolution",
        "audio_timestamp",
        "routing_config",
        "model_selection_config",
        "enable_affective_dialog",
    }
)
_TOOL_CONFIG = frozenset(
    {"function_calling_config", "retrieval_config", "include_server_side_tool_invocations"}
)
_FUNCTION_CALLING_CONFIG = frozenset(
    {"mode", "allowed_function_names", "stream_function_call_arguments"}
)
_MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
_CONTENT = frozenset({"role", "parts"})
_PART = frozenset(
    {
        "text",
        "inline_data",
        "file_data",
        "function_call",
        "function_response",
        "executable_code",
        "code_execution_result",
        "thought",
        "thought_signature",
        "video_metadata",
        "media_resolution",
        "part_metadata",
        "tool_call",
        "tool_response",
    }
)
_CAMEL = re.compile(r"[A-Z]")


class _Invalid(Exception):
    """The request is one the Gemini API would answer with 400 INVALID_ARGUMENT."""


def route(path: str) -> tuple[str, str] | None:
    """(model, method) for a Gemini API path, or None."""
    match = _ROUTE.match(path)
    return (match.group(1), match.group(2)) if match else None


# --------------------------------------------------------------------------- reading


def _snake(name: str) -> str:
    return _CAMEL.sub(lambda m: "_" + m.group(0).lower(), name)


def _fields(obj: Any, known: frozenset[str], where: str) -> dict[str, Any]:
    """`obj` with snake_case names; unknown names rejected as the service rejects them."""
    if not isinstance(obj, dict):
        raise _Invalid(f"Invalid value at '{where}': expected an object")
    fields: dict[str, Any] = {}
    for name, value in obj.items():
        key = _snake(name)
        if key not in known:
            prefix = f"'{where}'" if where else "request"
            raise _Invalid(
                f'Invalid JSON payload received. Unknown name "{name}" at {prefix}: '
                "Cannot find field."
            )
        fields[key] = value
    return fields


def _contents(data: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(role, parts with snake_case names) per content, checked."""
    raw = data.get("contents")
    if not isinstance(raw, list) or not raw:
        raise _Invalid("* GenerateContentRequest.contents: contents is not specified")
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for i, content in enumerate(raw):
        fields = _fields(content, _CONTENT, f"contents[{i}]")
        role = fields.get("role", "user")
        if role not in ("user", "model"):
            raise _Invalid(f"Please use a valid role: user, model. (contents[{i}].role: {role!r})")
        parts = fields.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _Invalid(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            )
        turns.append(
            (role, [_fields(p, _PART, f"contents[{i}].parts[{j}]") for j, p in enumerate(parts)])
        )
    return turns


def _check_responses(turns: list[tuple[str, list[dict[str, Any]]]]) -> None:
    for i, (role, parts) in enumerate(turns[:-1]):
        calls = sum(1 for p in parts if "function_call" in p)
        if role != "model" or not calls:
            continue
        answers = sum(1 for p in turns[i + 1][1] if "function_response" in p)
        if answers and answers != calls:
            raise _Invalid(
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )


def _result_text(part: dict[str, Any]) -> str:
    response = part["function_response"]
    body = response.get("response") if isinstance(response, dict) else None
    if isinstance(body, dict) and len(body) == 1:
        (value,) = body.values()
        if isinstance(value, str):
            return value
    return orjson.dumps(body).decode()


def _turn(data: dict[str, Any], turns: list[tuple[str, list[dict[str, Any]]]]) -> Turn:
    functions: list[str] = []
    for tool in data.get("tools") or ():
        fields = _fields(tool, frozenset({"function_declarations"}) | _OTHER_TOOLS, "tools")
        for declaration in fields.get("function_declarations") or ():
            name = declaration.get("name") if isinstance(declaration, dict) else None
            if not isinstance(name, str):
                raise _Invalid(
                    "* GenerateContentRequest.tools: function_declarations[].name is required"
                )
            functions.append(name)
    mode, allowed = "AUTO", ()
    if "tool_config" in data:
        config = _fields(data["tool_config"], _TOOL_CONFIG, "tool_config")
        calling = _fields(
            config.get("function_calling_config", {}),
            _FUNCTION_CALLING_CONFIG,
            "tool_config.function_calling_config",
        )
        mode = calling.get("mode", "AUTO")
        if mode not in _MODES:
            raise _Invalid(
                f"Invalid value at 'tool_config.function_calling_config.mode' ({mode!r})"
            )
        allowed = tuple(calling.get("allowed_function_names") or ())
    last_role, last_parts = turns[-1]
    results = tuple(_result_text(p) for p in last_parts if "function_response" in p)
    last_user = next(
        (
            " ".join(p["text"] for p in parts if isinstance(p.get("text"), str))
            for role, parts in reversed(turns)
            if role == "user" and any("text" in p for p in parts)
        ),
        "",
    )
    return Turn(
        functions=tuple(functions),
        last_user=last_user,
        results=results if last_role == "user" else (),
        forced=mode == "ANY",
        allowed=allowed if mode in ("ANY", "VALIDATED") else (),
        disabled=mode == "NONE",
    )


_OTHER_TOOLS = frozenset(
    {
        "retrieval",
        "computer_use",
        "file_search",
        "google_search",
        "google_maps",
        "code_execution",
        "enterprise_web_search",
        "google_search_retrieval",
        "url_context",
    }
)


def _read(raw: bytes) -> tuple[dict[str, Any], Turn, int]:
    """The request's fields, its reading, and its prompt token count (words)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Invalid("Invalid JSON payload received.") from None
    data = _fields(body, _REQUEST, "")
    if "generation_config" in data:
        _fields(data["generation_config"], _GENERATION_CONFIG, "generation_config")
    turns = _contents(data)
    _check_responses(turns)
    words = sum(
        len(str(p.get("text", "")).split()) + (1 if "function_response" in p else 0)
        for _, parts in turns
        for p in parts
    )
    system = data.get("system_instruction")
    if isinstance(system, dict):
        words += len(text_of(system.get("parts")).split())
    return data, _turn(data, turns), max(words, 1)


# --------------------------------------------------------------------------- answering


def _error(status: int, message: str, retry_after: float | str | None = None) -> web.Response:
    """Google's error shape; a retry hint goes where Google puts it, in a
    `google.rpc.RetryInfo` detail (`"retryDelay": "7s"`), never in a header."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
    }
    if retry_after is not None:
        delay = retry_after if isinstance(retry_after, str) else f"{retry_after:g}s"
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
        ]
    return web.Response(body=orjson.dumps({"error": error}), status=status, content_type=_JSON)


def _response(
    model: str,
    seq: int,
    parts: list[dict[str, Any]],
    usage: dict[str, int],
    finish: str | None,
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": f"fake-gemini-{seq}",
    }


def _usage(prompt: int, candidates: int | None) -> dict[str, int]:
    if candidates is None:
        return {"promptTokenCount": prompt, "totalTokenCount": prompt}
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates,
    }


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\r\n\r\n"


async def serve(upstream: FakeUpstream, request: web.BaseRequest, path: str) -> web.StreamResponse:
    routed = route(path)
    assert routed is not None  # the caller matched it
    model, method = routed
    raw = await request.read()
    behaviour = upstream._record(request, path, model, raw)
    fails = behaviour is not None and upstream._fails(behaviour)
    await upstream._pace(behaviour)
    if behaviour is not None:
        if fails:
            message = behaviour.message or f"fake upstream: injected HTTP {behaviour.status}"
            return _error(behaviour.status, message, behaviour.retry_after)
        if behaviour.mode == "garbage":
            return web.Response(body=b'{"candidates": [{oops', content_type=_JSON)
    if method in ("batchEmbedContents", "embedContent"):
        return _embed(raw, method)
    try:
        _, turn, prompt = _read(raw)
    except _Invalid as exc:
        return _error(400, str(exc))
    answer = decide(turn)
    seq = upstream._next_id()
    blocked = behaviour is not None and behaviour.mode == "content_filter"
    if answer.calls:
        parts: list[dict[str, Any]] = [
            {"functionCall": {"name": name, "args": ARGUMENTS}} for name in answer.calls
        ]
        output = len(orjson.dumps(ARGUMENTS).split()) * len(answer.calls)
    else:
        parts = [{"text": answer.text}]
        output = len(answer.text.split())
    finish = "SAFETY" if blocked else "STOP"
    if method == "generateContent":
        body = orjson.dumps(_response(model, seq, parts, _usage(prompt, output), finish))
        if behaviour is not None and behaviour.mode == "cut":
            return await upstream._cut_body(request, body)
        return web.Response(body=body, content_type=_JSON)
    if request.query.get("alt") != "sse":  # the JSON-array stream: not what clients use
        return _error(400, "fake upstream: streamGenerateContent speaks alt=sse only")
    if answer.calls:
        events = [_sse(_response(model, seq, parts, _usage(prompt, output), finish))]
    else:
        pieces = _PIECE.findall(answer.text) or [""]
        events = [
            _sse(_response(model, seq, [{"text": piece}], _usage(prompt, None), None))
            for piece in pieces[:-1]
        ]
        events.append(
            _sse(_response(model, seq, [{"text": pieces[-1]}], _usage(prompt, output), finish))
        )
    return await upstream._stream(request, (), events, (), behaviour)


def _embed(raw: bytes, method: str) -> web.Response:
    """``batchEmbedContents`` (``{"requests": [EmbedContentRequest]}`` -> ``{"embeddings":
    [{"values"}]}``) or ``embedContent`` (one request -> ``{"embedding": {"values"}}``)."""
    try:
        body = orjson.loads(raw)
        requests = body["requests"] if method == "batchEmbedContents" else [body]
        if not isinstance(requests, list) or not requests:
            raise _Invalid("* BatchEmbedContentsRequest.requests: requests is not specified")
        known = frozenset({"model", "content", "task_type", "title", "output_dimensionality"})
        texts = []
        for i, item in enumerate(requests):
            fields = _fields(item, known, f"requests[{i}]")
            content = _fields(fields.get("content"), _CONTENT, f"requests[{i}].content")
            texts.append(text_of(content.get("parts")))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _error(400, "Invalid JSON payload received.")
    except _Invalid as exc:
        return _error(400, str(exc))
    embeddings = [{"values": vector(text)} for text in texts]
    if method == "embedContent":
        return web.Response(body=orjson.dumps({"embedding": embeddings[0]}), content_type=_JSON)
    return web.Response(body=orjson.dumps({"embeddings": embeddings}), content_type=_JSON)
