"""OpenAI's chat messages as a Gemini GenerateContentRequest's `systemInstruction` and
`contents`, for `core.llm.gemini_request`: turns, tool calls and their results, images
and audio; with `rejected`, the 400 both modules raise. Pure functions; imports no
other Gemini module.

Decisions:
- `system` and `developer` messages, wherever they stand, become `systemInstruction`;
  turns are `user` and `model`, consecutive ones of a role merged, empty text left out.
- Images and audio go inline, from `data:` URLs and `input_audio` only: a web URL would
  make Google fetch what the client names, and `fileData` takes files uploaded with the
  deployment's own key, not the client's.
- Tool calls become `functionCall` parts (arguments must be a JSON object). Gemini 3
  refuses a replayed call without the `thoughtSignature` it gave, which OpenAI's
  messages cannot carry back: the first call of a turn gets Google's documented
  stand-in, `skip_thought_signature_validator`.
- `tool` messages become `functionResponse` parts (`{"output": text}`, Google's key for
  a result) named after their call, in the calls' order, in one user turn. A result
  must answer a call of the assistant message before it, and Google wants every call
  answered once any is: otherwise a 400 naming the client's message.
"""

from __future__ import annotations

from typing import Any

from core.llm.media import base64_data, call_arguments, data_image
from core.llm.types import ProviderError

THOUGHT_SIGNATURE = "skip_thought_signature_validator"  # Google's stand-in for a lost one
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}


def rejected(message: str) -> ProviderError:
    """A request Gemini cannot serve as asked: the client's 400, nobody's health."""
    return ProviderError("status", message, status=400)


class _Calls:
    """The calls of the latest assistant message still to be answered, and the
    answers given so far (put in the calls' order when the turn closes)."""

    __slots__ = ("answers", "message", "names", "order")

    def __init__(self, message: int = -1, calls: list[tuple[str, str]] | None = None) -> None:
        self.message = message
        self.order = {call_id: k for k, (call_id, _) in enumerate(calls or ())}
        self.names = dict(calls or ())
        self.answers: list[tuple[int, dict[str, Any]]] = []

    def close(self) -> list[dict[str, Any]]:
        """The answers in the calls' order, once every call has one (or none has)."""
        if self.answers and self.names:
            missing = ", ".join(repr(call_id[:64]) for call_id in self.names)
            raise rejected(
                f"messages[{self.message}]: Gemini needs a `tool` message for every tool "
                f"call; none answers {missing}."
            )
        parts = [part for _, part in sorted(self.answers, key=lambda answer: answer[0])]
        self.answers = []
        return parts


def _conversation(
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction's parts, the `contents` turns) for OpenAI's messages."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return  # nothing said (Gemini refuses empty turns)
        if turns and turns[-1]["role"] == role:
            turns[-1]["parts"].extend(parts)
        else:
            turns.append({"role": role, "parts": parts})

    calls = _Calls()
    for i, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_parts(content, i))
            continue
        if role == "tool":
            calls.answers.append(_function_response(message, i, calls))
            continue
        add("user", calls.close())
        if role == "user":
            add("user", _parts(content, i, media=True))
            calls = _Calls()
        elif role == "assistant":
            parts, made = _model_parts(message, i)
            add("model", parts)
            calls = _Calls(i, made)
        else:
            raise rejected(f"messages[{i}]: Gemini has no {role!r} role; send `tool` messages.")
    add("user", calls.close())
    if not turns:
        raise rejected("`messages`: Gemini needs at least one non-empty user or assistant message.")
    return system, turns


def _parts(content: Any, i: int, *, media: bool = False) -> list[dict[str, Any]]:
    """Content as parts, empty text left out (an assistant's refusal part is text it
    said); a user's (`media`) images and audio too."""
    if content is None or isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            if part.get(kind):
                parts.append({"text": part[kind]})
        elif media and kind == "image_url":
            parts.append(_image((part.get("image_url") or {}).get("url"), i))
        elif media and kind == "input_audio":
            audio = part.get("input_audio") or {}
            media_type = _AUDIO_TYPES.get(str(audio.get("format")))
            if media_type is None:
                raise rejected(f"messages[{i}]: audio must be wav or mp3.")
            parts.append(_inline(media_type, audio.get("data"), i))
        else:
            takes = "text, images and audio" if media else "text"
            raise rejected(f"messages[{i}]: Gemini takes {takes} here, not {kind!r} content.")
    return parts


def _image(url: Any, i: int) -> dict[str, Any]:
    media_type, data = data_image(url, i, "Gemini", _IMAGE_TYPES)
    return {"inlineData": {"mimeType": media_type, "data": data}}


def _inline(media_type: str, data: Any, i: int) -> dict[str, Any]:
    base64_data(data, i, f"the {media_type} data")
    return {"inlineData": {"mimeType": media_type, "data": data}}


def _model_parts(
    message: dict[str, Any], i: int
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(An assistant message's parts, its calls' (OpenAI id, name)): Gemini's calls carry
    no OpenAI id, its results are matched by name and order."""
    parts = _parts(message.get("content"), i)
    made: list[tuple[str, str]] = []
    for j, call in enumerate(message.get("tool_calls") or ()):
        arguments = call_arguments(call, i, j, "Gemini")
        function = call["function"]
        part: dict[str, Any] = {"functionCall": {"name": function["name"], "args": arguments}}
        if not made:  # Gemini 3 checks the first call of a turn only
            part["thoughtSignature"] = THOUGHT_SIGNATURE
        made.append((call["id"], function["name"]))
        parts.append(part)
    return parts, made


def _function_response(
    message: dict[str, Any], i: int, calls: _Calls
) -> tuple[int, dict[str, Any]]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise rejected(f"messages[{i}]: a `tool` message needs the `tool_call_id` it answers.")
    name = calls.names.pop(call_id, None)
    if name is None:
        raise rejected(
            f"messages[{i}]: `tool_call_id` {call_id[:64]!r} answers no tool call "
            "of the assistant message before it."
        )
    output = "".join(part["text"] for part in _parts(message.get("content"), i))
    part = {"functionResponse": {"name": name, "response": {"output": output}}}
    return calls.order[call_id], part
