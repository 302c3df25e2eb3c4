"""The fake upstream's `sloppy` mode: an OpenAI-compatible server that bends OpenAI's
wire format the ways real ones do (Mistral, vLLM and Ollama builds, litellm-based
proxies), for the gateway's contract tests.

Compared with the plain answer it sends, non-streaming: `system_fingerprint: null`,
`message.tool_calls: null` (when there are none), no `message.refusal`, no
`choices[].logprobs`, `usage.prompt_tokens_details: null` and a
`completion_tokens_details` holding a null; streaming: `system_fingerprint: null`
and `delta.tool_calls: null` on every chunk, `delta.role: null` after the first,
and with `include_usage` the usage on the finish chunk instead of a last chunk
with `choices: []`. The text, tool calls and token counts are the plain answer's.

`bench.fake_upstream` keeps rendering; this module rewrites a rendered plan (its
byte tails, which lack the opening brace and the id). Never on the benchmark path.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # the plan's module imports this one
    from bench.fake_upstream import _ChatPlan

_END = b"\n\n"


def _load(tail: bytes) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(b"{" + tail.removesuffix(_END))
    return data


def _dump(data: dict[str, Any], *, event: bool) -> bytes:
    return orjson.dumps(data)[1:] + (_END if event else b"")


def _body(tail: bytes) -> bytes:
    if not tail:
        return tail
    data = _load(tail)
    data["system_fingerprint"] = None
    for choice in data["choices"]:
        choice.pop("logprobs", None)
        message = choice["message"]
        message.pop("refusal", None)
        message.setdefault("tool_calls", None)
    usage = data.get("usage")
    if isinstance(usage, dict):
        usage["prompt_tokens_details"] = None
        usage["completion_tokens_details"] = {"reasoning_tokens": 0, "audio_tokens": None}
    return _dump(data, event=False)


def _chunks(tails: tuple[bytes, ...], *, first: bool) -> list[dict[str, Any]]:
    chunks = [_load(tail) for tail in tails]
    for chunk in chunks:
        chunk["system_fingerprint"] = None
        for choice in chunk["choices"]:
            delta = choice["delta"]
            delta.setdefault("tool_calls", None)
            if not first:
                delta.setdefault("role", None)
    return chunks


def _finish(tails: tuple[bytes, ...]) -> tuple[bytes, ...]:
    chunks = _chunks(tails, first=False)
    if len(chunks) > 1 and chunks[-1]["choices"] == [] and chunks[-1].get("usage"):
        usage = chunks.pop()["usage"]
        chunks[-1]["usage"] = usage  # on the (last) finish chunk, as some servers do
    return tuple(_dump(chunk, event=True) for chunk in chunks)


def sloppy(plan: _ChatPlan) -> _ChatPlan:
    """A copy of a rendered chat plan, bent."""
    if not plan.stream:
        return dataclasses.replace(
            plan, body=_body(plan.body), body_filtered=_body(plan.body_filtered)
        )
    return dataclasses.replace(
        plan,
        role=tuple(_dump(chunk, event=True) for chunk in _chunks(plan.role, first=True)),
        pieces=tuple(_dump(chunk, event=True) for chunk in _chunks(plan.pieces, first=False)),
        finish=_finish(plan.finish),
        finish_filtered=_finish(plan.finish_filtered),
    )
