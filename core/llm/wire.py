"""The OpenAI wire shape every answer leaves a provider in.

Each provider hands its answers here before the router sees them, so the cache
(which stores what a provider returned), the ledger, replays and every client
get one shape: what OpenAI's published schema (`CreateChatCompletionResponse`,
`CreateChatCompletionStreamResponse`, `CreateEmbeddingResponse`) accepts. The
official Python SDK tolerates the usual deviations; typed TypeScript and Go
clients and schema validators do not.

- `conform_completion`, `conform_chunk`, `conform_embeddings` repair, in place,
  the ways real upstreams break the schema (Mistral's `tool_calls: null`, a
  missing `refusal` or `logprobs`, `system_fingerprint: null`, usage details
  holding nulls) and say whether they changed anything. The direct path passes
  an upstream's bytes through and re-serialises only then: on an answer that is
  already conformant (OpenAI's own) the check is a few dict lookups.
- `StreamShape` holds one stream's state: usage always travels in a separate
  last chunk with `choices: []`, whatever the upstream did (some
  OpenAI-compatible servers put it on the finish chunk, litellm on an empty
  choice).
- `clean_litellm` first takes off what litellm's pydantic dump adds: its private
  keys, a null for every field it knows of, usage fields OpenAI does not define.

Never here: dropping or inventing content. Usage is never made up (the ledger
reads these figures as the provider's); a total is only summed from its parts.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from core.llm.types import Chunk, Deployment

# litellm-only keys that must not reach an OpenAI-shaped client.
_PRIVATE_KEYS = ("_hidden_params", "_response_ms", "provider_specific_fields")
# What OpenAI's usage objects define; litellm adds its own beside them (`cost`,
# `cache_read_input_tokens`, ... whose figures the OpenAI details already carry).
_CHAT_USAGE = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    }
)
_EMBEDDING_USAGE = frozenset({"prompt_tokens", "total_tokens"})
_DETAILS = {
    "prompt_tokens_details": frozenset(
        {"audio_tokens", "cached_tokens", "text_tokens", "image_tokens", "cache_write_tokens"}
    ),
    "completion_tokens_details": frozenset(
        {
            "accepted_prediction_tokens",
            "audio_tokens",
            "reasoning_tokens",
            "text_tokens",
            "rejected_prediction_tokens",
        }
    ),
}
# The top-level fields of OpenAI's completions, chunks and embedding lists.
_TOP_KEYS = frozenset(
    {
        "id",
        "object",
        "created",
        "model",
        "choices",
        "data",
        "usage",
        "service_tier",
        "system_fingerprint",
        "metadata",
        "moderation",
        "obfuscation",
    }
)
# The fields of OpenAI's response message (a delta's are a subset).
_MESSAGE_KEYS = frozenset(
    {"role", "content", "refusal", "tool_calls", "function_call", "annotations", "audio"}
)
# Message and delta fields the schema types as an object or array, never null.
_NOT_NULL = ("tool_calls", "function_call", "annotations")


# -- usage ------------------------------------------------------------------------------
def _conform_usage(usage: dict[str, Any]) -> bool:
    """Details objects without nulls (the schema types every detail as an integer),
    a missing total summed from its parts."""
    changed = False
    for key in _DETAILS:
        if key not in usage:
            continue
        details = usage[key]
        if isinstance(details, dict):
            if None not in details.values():
                continue
            kept = {name: value for name, value in details.items() if value is not None}
            if kept:
                usage[key] = kept
            else:
                del usage[key]
        else:
            del usage[key]
        changed = True
    if not isinstance(usage.get("total_tokens"), int):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            usage["total_tokens"] = prompt + completion
            changed = True
    return changed


def _conform_top(data: dict[str, Any]) -> bool:
    """`system_fingerprint` is a string or absent; usage a conformant object or absent.
    A chunk's `usage: null` is allowed and kept: OpenAI sends it on every chunk of a
    stream with `include_usage`, and dropping it would re-serialise each one."""
    changed = False
    if "system_fingerprint" in data and not isinstance(data["system_fingerprint"], str):
        del data["system_fingerprint"]
        changed = True
    if "usage" in data:
        usage = data["usage"]
        if isinstance(usage, dict):
            changed = _conform_usage(usage) or changed
        elif usage is not None or data.get("object") != "chat.completion.chunk":
            del data["usage"]
            changed = True
    return changed


# -- chat completions -------------------------------------------------------------------
def _conform_message(message: dict[str, Any]) -> bool:
    changed = False
    for key in _NOT_NULL:
        if key in message and message[key] is None:
            del message[key]
            changed = True
    for key in ("content", "refusal"):  # required, nullable
        if key not in message:
            message[key] = None
            changed = True
    if "role" not in message:
        message["role"] = "assistant"
        changed = True
    return changed


def conform_completion(data: dict[str, Any]) -> bool:
    """A `chat.completion` made schema-valid in place; True if anything changed."""
    changed = _conform_top(data)
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if "logprobs" not in choice:  # required, nullable
            choice["logprobs"] = None
            changed = True
        message = choice.get("message")
        if isinstance(message, dict):
            changed = _conform_message(message) or changed
    return changed


def _conform_delta(delta: dict[str, Any]) -> bool:
    changed = False
    if None in delta.values():  # `content: null` and `refusal: null` are allowed
        for key in ("role", *_NOT_NULL):
            if key in delta and delta[key] is None:
                del delta[key]
                changed = True
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            if isinstance(call, dict) and None in call.values():
                for key in [k for k, v in call.items() if v is None]:
                    del call[key]
                changed = True
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and None in function.values():
                for key in [k for k, v in function.items() if v is None]:
                    del function[key]
                changed = True
    return changed


def conform_chunk(data: dict[str, Any]) -> bool:
    """A `chat.completion.chunk` made schema-valid in place; True if anything changed.
    Where its usage goes is `StreamShape`'s business."""
    changed = _conform_top(data)
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if "finish_reason" not in choice:  # required, nullable
            choice["finish_reason"] = None
            changed = True
        delta = choice.get("delta")
        if isinstance(delta, dict):
            changed = _conform_delta(delta) or changed
        elif delta is None:
            choice["delta"] = {}
            changed = True
    return changed


def _empty(choice: Any) -> bool:
    """A choice that says nothing (litellm's companion to its usage chunk)."""
    if not isinstance(choice, dict):
        return False
    if choice.get("finish_reason") is not None or choice.get("logprobs") is not None:
        return False
    delta = choice.get("delta")
    return not isinstance(delta, dict) or all(v is None or v == "" for v in delta.values())


class StreamShape:
    """One stream's chunks in OpenAI's shape and order: each chunk conformed, and
    usage only ever in a last chunk of its own with `choices: []`.

    Usage that rides on a chunk with choices is taken off it and held (the latest
    one wins: a server may report running totals on every chunk); `last()` gives
    it back as that final chunk when the stream has ended. A usage chunk that is
    already separate passes as it is."""

    __slots__ = ("_first", "_usage")

    def __init__(self) -> None:
        self._first: dict[str, Any] | None = None
        self._usage: dict[str, Any] | None = None

    def chunk(self, payload: bytes | None, data: dict[str, Any]) -> Chunk | None:
        """The chunk to send for `data` (its `payload` bytes when nothing needed
        changing; None: serialise), or None when nothing is left to send."""
        if self._first is None:
            self._first = data
        changed = conform_chunk(data)
        usage = data.get("usage")
        if usage is not None:
            choices = data.get("choices")
            if choices:
                del data["usage"]
                self._usage = usage
                if all(_empty(choice) for choice in choices):
                    return None
                changed = True
            else:
                self._usage = None  # the separate usage chunk: newer than anything held
        if payload is None or changed:
            payload = orjson.dumps(data)
        return Chunk(payload, data)

    def last(self) -> Chunk | None:
        """The held usage as the stream's last chunk, or None if none is held."""
        usage, self._usage = self._usage, None
        if usage is None:
            return None
        first = self._first or {}
        data: dict[str, Any] = {
            "id": first.get("id"),
            "object": "chat.completion.chunk",
            "created": first.get("created"),
            "model": first.get("model"),
        }
        for key in ("system_fingerprint", "service_tier"):
            if isinstance(first.get(key), str):
                data[key] = first[key]
        data["choices"] = []
        data["usage"] = usage
        return Chunk(orjson.dumps(data), data)


# -- embeddings -------------------------------------------------------------------------
def conform_embeddings(data: dict[str, Any]) -> bool:
    """An embeddings list made schema-valid in place; True if anything changed. One
    item is looked at: a server names every item's `object` or none."""
    changed = False
    if "object" not in data:
        data["object"] = "list"
        changed = True
    items = data.get("data")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        if "object" not in items[0]:
            for item in items:
                if isinstance(item, dict):
                    item.setdefault("object", "embedding")
            changed = True
    usage = data.get("usage")
    if isinstance(usage, dict) and not isinstance(usage.get("total_tokens"), int):
        if isinstance(usage.get("prompt_tokens"), int):
            usage["total_tokens"] = usage["prompt_tokens"]
            changed = True
    return changed


# -- litellm ----------------------------------------------------------------------------
def _drop_nulls(data: dict[str, Any]) -> None:
    for key in [k for k, v in data.items() if v is None or k in _PRIVATE_KEYS]:
        del data[key]


def _drop_empty_extras(data: dict[str, Any], known: frozenset[str]) -> None:
    """Keys of litellm's own beside OpenAI's that say nothing: the `vertex_ai_*_metadata:
    []` it adds to every Gemini chunk, a Gemini message's `images: []`. (One with a value
    is kept: it is information; the stream assembler then declines to cache it.)"""
    for key in [k for k, v in data.items() if k not in known and v in ([], {})]:
        del data[key]


def _openai_usage(usage: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    kept = {k: v for k, v in usage.items() if k in fields and v is not None}
    for key, names in _DETAILS.items():
        details = kept.get(key)
        if isinstance(details, dict):
            details = {k: v for k, v in details.items() if k in names and v is not None}
            if details:
                kept[key] = details
            else:
                del kept[key]
    return kept


def clean_litellm(data: dict[str, Any]) -> dict[str, Any]:
    """A litellm `model_dump()` without litellm's additions, ready for `conform_*`
    (which put back the nulls OpenAI requires: `content`, `refusal`, `logprobs`,
    a chunk's `finish_reason`). litellm writes null for every field its models
    declare, OpenAI leaves most of them out, and the schema refuses null for many."""
    _drop_nulls(data)
    _drop_empty_extras(data, _TOP_KEYS)
    for choice in data.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        _drop_nulls(choice)
        if "delta" in choice:
            choice["logprobs"] = None  # as OpenAI sends it (litellm drops the upstream's)
        for part in ("message", "delta"):
            inner = choice.get(part)
            if not isinstance(inner, dict):
                continue
            _drop_nulls(inner)
            _drop_empty_extras(inner, _MESSAGE_KEYS)
            for call in inner.get("tool_calls") or ():
                if isinstance(call, dict):
                    _drop_nulls(call)
                    if isinstance(call.get("function"), dict):
                        _drop_nulls(call["function"])
                    if part == "message":
                        # litellm numbers a message's tool calls; OpenAI's message has no
                        # `index` (a delta's has), and a client sends it back as it got it.
                        call.pop("index", None)
    usage = data.get("usage")
    if isinstance(usage, dict):
        fields = _CHAT_USAGE if "choices" in data else _EMBEDDING_USAGE
        data["usage"] = _openai_usage(usage, fields)
    return data


class TranslatedStream:
    """The chunk envelope of a stream translated from another provider's events
    (`core.llm.cohere_answer.CohereStream`, `core.llm.anthropic_answer.AnthropicStream`):
    one id, `created` and model for every chunk, the role chunk once before anything
    else (`_open`), and `finished` once the provider said the stream ended."""

    __slots__ = ("_created", "_deployment", "_id", "_opened", "finished")

    def __init__(self, deployment: Deployment) -> None:
        self._deployment = deployment
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._created = int(time.time())
        self._opened = False
        self.finished = False

    def chunks(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks one provider event becomes (a subclass's translation)."""
        raise NotImplementedError

    def _name(self, provider_id: Any) -> None:
        """The provider's own id for the answer, when it gives one before any chunk."""
        if isinstance(provider_id, str) and not self._opened:
            self._id = provider_id

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._deployment.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _open(self) -> list[dict[str, Any]]:
        """The role chunk, once, before anything else is sent."""
        if self._opened:
            return []
        self._opened = True
        return [self._chunk({"role": "assistant", "content": ""})]
