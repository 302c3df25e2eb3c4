"""Google Gemini API answers as OpenAI's: a `generateContent` answer as a
`chat.completion`, each `streamGenerateContent?alt=sse` event as `chat.completion.chunk`s,
`batchEmbedContents` answers as an embeddings list. Pure functions and one stream's
state; `core.llm.gemini_request` builds the requests. Not wired into the gateway yet.
Shapes from Google's REST reference (GenerateContentResponse, UsageMetadata, errors).

Decisions:
- Finish reasons: STOP -> `stop`, or `tool_calls` when the candidate called functions
  (Gemini says STOP after calls); MAX_TOKENS -> `length`; SAFETY, RECITATION,
  BLOCKLIST, PROHIBITED_CONTENT, SPII and the IMAGE_ ones -> `content_filter`; an
  unknown new one (OTHER, LANGUAGE, ...) -> `stop`. MALFORMED_FUNCTION_CALL and its
  kin are a failed generation, the upstream's like a 5xx (a call the client cannot run,
  and a retry may well succeed): never an answer, so never cached.
- A prompt Gemini blocked (`promptFeedback.blockReason`, no candidates) is a 400 naming
  the reason, as Azure OpenAI answers a filtered prompt: nothing was generated, and the
  same prompt would be blocked again, so it is the client's to change (not cached).
- Usage: the prompt is `promptTokenCount` plus `toolUsePromptTokenCount`, the
  completion `candidatesTokenCount` plus `thoughtsTokenCount` (also as
  `completion_tokens_details.reasoning_tokens`: Google bills thinking as output), the
  cache's reads as `prompt_tokens_details.cached_tokens` (already in the prompt's
  count). None at all: no usage (never made up).
- Content is the text parts joined; thought summaries (`thought: true`) and other parts
  (code execution, inline data) have no place in OpenAI's message and are left out.
  `functionCall` parts are tool calls: Google's `id` when it sends one, else
  `call_<hex>`; arguments are the JSON of `args`. Candidates are choices, by `index`.
- Stream: every event is a whole GenerateContentResponse. The role chunk first, text
  deltas, each call whole in one delta (numbered 0.. per choice), the finish chunk when
  a candidate has its finishReason, then usage (cumulative on every event: the last one
  kept) in a chunk of its own with `choices: []` (the gateway always wants usage; it
  drops that chunk for a client that did not ask). Gemini sends no terminator, so
  `finished` is set once every choice has finished.
- An error object (`{"error": {"code", "message", "status"}}`) is a failed call with
  its code as status; 504 / DEADLINE_EXCEEDED is a timeout.
- Embeddings: Google's batchEmbedContents answer carries no token counts, and OpenAI's
  schema requires usage: it is 0, the "no figure" the ledger already reads for a
  missing count, rather than an estimate passed off as Google's.
- The id is Google's `responseId` (its logs know it); `model` is the deployment's.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from core.llm.translation import count, embedding, garbage
from core.llm.types import Deployment, ProviderError
from core.llm.wire import TranslatedStream

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_FAILED = frozenset(
    {
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "MISSING_THOUGHT_SIGNATURE",
    }
)
# The HTTP status of each of Google's error statuses (google.rpc.Code), when the error
# object carries no `code`.
_ERROR_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
_MAX_MESSAGE = 2000


def error(deployment: Deployment, data: Any) -> ProviderError:
    """The failure a Google error object (`{"error": {"code", "message", "status"}}`) is."""
    detail = data.get("error") if isinstance(data, dict) else None
    detail = detail if isinstance(detail, dict) else {}
    code, name, message = detail.get("code"), detail.get("status"), detail.get("message")
    name = name if isinstance(name, str) else None
    if type(code) is int and 400 <= code <= 599:
        status = code
    else:
        status = _ERROR_STATUS.get(name, 502) if name else 502
    text = f"Gemini: {message if isinstance(message, str) and message else name or 'error'}"
    if status == 504 or name == "DEADLINE_EXCEEDED":
        return ProviderError("timeout", f"{deployment.id}: {text}"[:_MAX_MESSAGE])
    return ProviderError("status", text[:_MAX_MESSAGE], status=status)


def _blocked(data: dict[str, Any]) -> ProviderError | None:
    """The 400 a blocked prompt is (`promptFeedback.blockReason`), or None."""
    feedback = data.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if not isinstance(reason, str):
        return None
    return ProviderError("status", f"Gemini blocked the prompt ({reason[:64]}).", status=400)


def finish_reason(deployment: Deployment, reason: Any, *, calls: bool = False) -> str:
    """OpenAI's finish reason for Gemini's; a failed generation as the failure it is."""
    if not isinstance(reason, str):
        raise garbage(deployment, "a candidate without a finish reason")
    if reason in _FAILED:
        raise ProviderError("status", f"Gemini: the generation failed ({reason})", status=502)
    if reason in _FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if calls else "stop"


def usage(raw: Any) -> dict[str, Any] | None:
    """OpenAI's usage from Gemini's `usageMetadata`, or None when it sent no figures."""
    if not isinstance(raw, dict):
        return None
    names = (
        "promptTokenCount",
        "toolUsePromptTokenCount",
        "candidatesTokenCount",
        "thoughtsTokenCount",
        "cachedContentTokenCount",
    )
    prompt, tools, candidates, thoughts, cached = (count(raw.get(name)) for name in names)
    if prompt is None and tools is None and candidates is None and thoughts is None:
        return None
    read = (prompt or 0) + (tools or 0)
    written = (candidates or 0) + (thoughts or 0)
    out: dict[str, Any] = {
        "prompt_tokens": read,
        "completion_tokens": written,
        "total_tokens": read + written,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if thoughts:
        out["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return out


def _parts(deployment: Deployment, candidate: Any, position: int) -> tuple[int, list[Any]]:
    """(A candidate's index, its content's parts), checked: a candidate without content
    (a filtered one) has no parts."""
    if not isinstance(candidate, dict):
        raise garbage(deployment, "a candidate that is not an object")
    index = candidate.get("index", position)
    if type(index) is not int or index < 0:
        raise garbage(deployment, "a candidate whose index is no integer")
    content = candidate.get("content")
    if content is None:
        return index, []
    parts = content.get("parts", []) if isinstance(content, dict) else None
    if not isinstance(parts, list) or not all(isinstance(part, dict) for part in parts):
        raise garbage(deployment, "a candidate whose parts are not a list of objects")
    return index, parts


def _text(part: dict[str, Any]) -> str | None:
    text = part.get("text")
    return text if isinstance(text, str) and text and part.get("thought") is not True else None


def _call(deployment: Deployment, call: Any) -> dict[str, Any]:
    """OpenAI's tool call for a `functionCall` part's value."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise garbage(deployment, "a function call without a name")
    args = call.get("args")
    if args is not None and not isinstance(args, dict):
        raise garbage(deployment, "a function call whose args are not an object")
    given = call.get("id")
    return {
        "id": given if isinstance(given, str) and given else f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": call["name"], "arguments": orjson.dumps(args or {}).decode()},
    }


def _candidates(deployment: Deployment, data: dict[str, Any]) -> list[Any] | None:
    candidates = data.get("candidates")
    if candidates is not None and not isinstance(candidates, list):
        raise garbage(deployment, "candidates that are not a list")
    return candidates or None


def completion(deployment: Deployment, data: Any) -> dict[str, Any]:
    """A `chat.completion` for Gemini's non-streamed answer (a candidate per choice)."""
    if not isinstance(data, dict):
        raise garbage(deployment, "with an unexpected shape")
    if "error" in data:
        raise error(deployment, data)
    candidates = _candidates(deployment, data)
    if candidates is None:
        raise _blocked(data) or garbage(deployment, "without candidates")
    choices = []
    for position, candidate in enumerate(candidates):
        index, parts = _parts(deployment, candidate, position)
        texts = [text for part in parts if (text := _text(part)) is not None]
        calls = [
            _call(deployment, part["functionCall"]) for part in parts if "functionCall" in part
        ]
        reason = finish_reason(deployment, candidate.get("finishReason"), calls=bool(calls))
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(texts) if texts else None,
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {"index": index, "message": message, "logprobs": None, "finish_reason": reason}
        )
    given = data.get("responseId")
    out: dict[str, Any] = {
        "id": given if isinstance(given, str) and given else f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": deployment.model,
        "choices": sorted(choices, key=lambda choice: choice["index"]),
    }
    counted = usage(data.get("usageMetadata"))
    if counted is not None:
        out["usage"] = counted
    return out


def embeddings(
    deployment: Deployment, answers: list[tuple[int, Any]], encoding: str | None
) -> dict[str, Any]:
    """OpenAI's embeddings list from Gemini's answers, one per batch: (texts sent, answer)."""
    items: list[dict[str, Any]] = []
    for sent, data in answers:
        vectors = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(vectors, list) or len(vectors) != sent:
            raise garbage(deployment, "without one embedding per text")
        for vector in vectors:
            values = vector.get("values") if isinstance(vector, dict) else None
            value = embedding(deployment, values, encoding)
            items.append({"object": "embedding", "index": len(items), "embedding": value})
    return {
        "object": "list",
        "data": items,
        "model": deployment.model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


# -- streams ----------------------------------------------------------------------------
class GeminiStream(TranslatedStream):
    """One stream's state: Gemini's events in, OpenAI's chunks out (`chunks`), and
    whether every choice has finished (`finished`; `choices` is the request's `n`)."""

    __slots__ = ("_calls", "_choices", "_done", "_roles", "_usage")

    def __init__(self, deployment: Deployment, *, choices: int = 1) -> None:
        super().__init__(deployment)
        self._choices = max(choices, 1)
        self._calls: dict[int, int] = {}  # a choice's index -> the calls it has made
        self._done: set[int] = set()  # the choices that have finished
        self._roles = {0}  # the choices whose role chunk has gone (0's is `_open`'s)
        self._usage: dict[str, Any] | None = None

    def chunks(self, event: Any) -> list[dict[str, Any]]:
        """The chunks one event becomes."""
        if not isinstance(event, dict):
            raise garbage(self._deployment, "an event that is not an object")
        if "error" in event:
            raise error(self._deployment, event)
        self._name(event.get("responseId"))
        counted = usage(event.get("usageMetadata"))
        if counted is not None:
            self._usage = counted  # cumulative: the latest figures replace the earlier
        candidates = _candidates(self._deployment, event)
        if candidates is None:
            blocked = _blocked(event)
            if blocked is not None:
                raise blocked
            return []  # an event with usage only
        out: list[dict[str, Any]] = []
        for position, candidate in enumerate(candidates):
            out.extend(self._candidate(candidate, position))
        if len(self._done) >= self._choices and not self.finished:
            self.finished = True
            if self._usage is not None:
                last = self._chunk({})
                last["choices"] = []
                last["usage"] = self._usage
                out.append(last)
        return out

    def _at(self, index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk = self._chunk(delta, finish)
        chunk["choices"][0]["index"] = index
        return chunk

    def _candidate(self, candidate: Any, position: int) -> list[dict[str, Any]]:
        index, parts = _parts(self._deployment, candidate, position)
        if index in self._done and not parts and candidate.get("finishReason") is None:
            return []  # a finished candidate repeated empty (beside one still going)
        if index >= self._choices or index in self._done:
            raise garbage(self._deployment, "a candidate it was not asked for, or had finished")
        out = self._open()
        if index not in self._roles:
            self._roles.add(index)
            out.append(self._at(index, {"role": "assistant", "content": ""}))
        for part in parts:
            text = _text(part)
            if text is not None:
                out.append(self._at(index, {"content": text}))
            elif "functionCall" in part:
                call = _call(self._deployment, part["functionCall"])
                number = self._calls.get(index, 0)
                self._calls[index] = number + 1
                out.append(self._at(index, {"tool_calls": [{"index": number, **call}]}))
        raw = candidate.get("finishReason")
        if raw is not None:
            calls = self._calls.get(index, 0) > 0
            out.append(self._at(index, {}, finish_reason(self._deployment, raw, calls=calls)))
            self._done.add(index)
        return out
