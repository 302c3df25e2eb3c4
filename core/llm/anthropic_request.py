"""OpenAI's chat requests as Anthropic Messages API requests (`/v1/messages`), as pure
functions; `core.llm.anthropic_answer` reads the answers. Not wired into the gateway
yet (Anthropic still goes through litellm). Shapes from Anthropic's API reference
(Messages, tool use, streaming, vision).

A request is built name by name: each name of `CHAT_PARAMETERS` is translated,
deliberately dropped or refused (`TRANSLATED`, `DROPPED`, `REFUSED`; a test holds
the three equal to the allow-list), and nothing is copied wholesale, so nothing
else of the client's reaches Anthropic. Refused means a 400 naming what Anthropic
lacks, where dropping it would silently give the client less than it asked for
(`n: 3`, custom tools, audio, the deprecated `functions`).

Decisions beyond the one-to-one names:
- `max_tokens` is required by Anthropic: `max_completion_tokens`, else `max_tokens`,
  else `DEFAULT_MAX_TOKENS`.
- `system` and `developer` messages, wherever they stand, become the top-level
  `system` (a string when there is one string, else text blocks, in order).
- Turns: user content becomes blocks (text; images from `data:` URLs only, as base64
  sources: a web URL would make Anthropic fetch what the client names); assistant
  tool calls become `tool_use` blocks (arguments must be a JSON object); `tool`
  messages become `tool_result` blocks in a user turn. Anthropic wants alternating
  turns, so consecutive turns of one role are merged (adjacent tool results into one
  user turn, a user message after them into the same turn, after the results, as
  Anthropic requires). Empty text is left out (Anthropic refuses empty text blocks),
  and a turn left with nothing is dropped.
- A `tool` message must answer a call of the assistant message before it (other tool
  messages between): Anthropic refuses it otherwise, naming its own message numbers,
  so it is refused here with the client's.
- `tool_choice`: `auto` -> `{"type": "auto"}`, `required` -> `any`, `none` ->
  `none`, a named function -> `{"type": "tool", "name"}`; `allowed_tools` offers
  only those functions (`any` when required). `parallel_tool_calls: false` ->
  `disable_parallel_tool_use` (on `auto` when no choice was given). No tools: no
  `tool_choice`, which Anthropic refuses without tools.
- `user` (or `safety_identifier`) -> `metadata.user_id`; OpenAI's `metadata` (stored
  completion tags) has no Anthropic counterpart and is dropped.
- Numbers go as sent: one out of Anthropic's range (temperature above 1) is
  Anthropic's 400, its message to the client.
- A JSON `response_format` (Anthropic has none) is a forced tool, one call only
  (`core.llm.anthropic_json` holds the tool and its decisions).
- JSON mode with the client's `tools` is refused: litellm added the JSON tool to
  them and forced it, overriding `tool_choice`, so the client's tools could never be
  called; offering both unforced would not guarantee JSON.
"""

from __future__ import annotations

from typing import Any

from core.llm.anthropic_json import _json_mode
from core.llm.anthropic_json import json_tool as json_tool  # re-exported
from core.llm.anthropic_json import rejected as rejected  # re-exported, and used here
from core.llm.media import call_arguments, data_image
from core.llm.types import Deployment

# Anthropic's endpoint below its base URL (https://api.anthropic.com), and the API
# version every request names (`anthropic-version` header).
MESSAGES_PATH = "/v1/messages"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires `max_tokens`; OpenAI's default is "no cap"

TRANSLATED = frozenset(
    {
        "messages",
        "model",  # the deployment's, never the client's
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "user",
        "safety_identifier",
        "response_format",
    }
)
# Settings Anthropic has no counterpart for, dropped as litellm's `drop_params` dropped
# them: the answer still answers the request (`stream_options`: Anthropic always sends
# usage; `seed` and the penalties: no such sampling controls; `logprobs`: none given;
# `prompt_cache_*`: Anthropic caches by `cache_control` marks, not a key;
# `reasoning_effort`: extended thinking is a token budget, not translated yet).
DROPPED = frozenset(
    {
        "stream_options",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
        "reasoning_effort",
        "verbosity",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "prediction",
        "moderation",
        "web_search_options",
    }
)
REFUSED = frozenset({"n", "functions", "function_call", "modalities", "audio"})

_TOOL_CHOICE = {"auto": "auto", "required": "any", "none": "none"}
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_SAME_NAME = ("temperature", "top_p", "top_k")


# -- requests ---------------------------------------------------------------------------
def chat_body(deployment: Deployment, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The `/v1/messages` request for an OpenAI chat `body` (validated by the gateway)."""
    if body.get("n") not in (None, 1):
        raise rejected("Anthropic answers one choice per request: `n` must be 1.")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise rejected("Anthropic deployments take `tools`, not the deprecated `functions`.")
    if body.get("audio") is not None or "audio" in (body.get("modalities") or ()):
        raise rejected("Anthropic answers in text only: no `audio` output.")
    json_mode = _json_mode(body)
    if json_mode is not None and body.get("tools"):
        raise rejected(
            "Use either `tools` or a JSON `response_format` with Anthropic deployments: "
            "Anthropic's JSON mode is a tool it is made to call."
        )
    system, messages = _conversation(body.get("messages") or [])
    native: dict[str, Any] = {
        "model": deployment.model,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system is not None:
        native["system"] = system
    if stream:
        native["stream"] = True
    tools = body.get("tools") or []
    choice, tools = _tool_choice(body.get("tool_choice"), tools)
    if json_mode is not None:
        forced, definition = json_mode
        native["tools"] = [definition]
        # One call: its input is the whole answer (a second would have no place).
        native["tool_choice"] = {
            "type": "tool",
            "name": forced.name,
            "disable_parallel_tool_use": True,
        }
    elif tools:
        native["tools"] = [_tool(index, tool) for index, tool in enumerate(tools)]
        if body.get("parallel_tool_calls") is False and choice.get("type") != "none":
            choice = {**choice, "disable_parallel_tool_use": True}
        if choice != {"type": "auto"} or body.get("tool_choice") is not None:
            native["tool_choice"] = choice
    for name in _SAME_NAME:
        if body.get(name) is not None:
            native[name] = body[name]
    stop = body.get("stop")
    if stop:
        native["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    user = body.get("safety_identifier") or body.get("user")
    if user:
        native["metadata"] = {"user_id": str(user)}
    return native


def _conversation(
    messages: list[dict[str, Any]],
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(Anthropic's `system` or None, its alternating turns) for OpenAI's messages."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    calls: set[str] = set()  # the ids the latest assistant turn called, still answerable
    for i, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_text_blocks(content, i))
            continue
        if role == "user":
            blocks, calls = _user_blocks(content, i), set()
        elif role == "assistant":
            blocks = _assistant_blocks(message, i)
            calls = {block["id"] for block in blocks if block["type"] == "tool_use"}
        elif role == "tool":
            blocks = [_tool_result(message, i, calls)]
            role = "user"
        else:
            raise rejected(f"messages[{i}]: Anthropic has no {role!r} role; send `tool` messages.")
        if not blocks:
            continue  # nothing said (Anthropic refuses empty turns)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise rejected("`messages`: Anthropic needs at least one non-empty user message.")
    if len(system) == 1:
        return system[0]["text"], turns  # one system text: Anthropic's plain string
    return (system or None), turns


def _text_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    """System, assistant and tool content as text blocks, empty text left out (an
    assistant's refusal part is text it said)."""
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind not in ("text", "refusal"):
            raise rejected(f"messages[{i}]: Anthropic takes text here, not {kind!r} content.")
        if part.get(kind):
            blocks.append({"type": "text", "text": part[kind]})
    return blocks


def _user_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url") or {}, i))
        else:
            raise rejected(f"messages[{i}]: Anthropic takes text and images, not {kind!r} content.")
    return blocks


def _image(image: dict[str, Any], i: int) -> dict[str, Any]:
    media_type, data = data_image(image.get("url"), i, "Anthropic", _IMAGE_TYPES)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _assistant_blocks(message: dict[str, Any], i: int) -> list[dict[str, Any]]:
    blocks = _text_blocks(message.get("content"), i)
    for j, call in enumerate(message.get("tool_calls") or ()):
        arguments = call_arguments(call, i, j, "Anthropic")
        function = call["function"]
        blocks.append(
            {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}
        )
    return blocks


def _tool_result(message: dict[str, Any], i: int, calls: set[str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise rejected(f"messages[{i}]: a `tool` message needs the `tool_call_id` it answers.")
    if call_id not in calls:
        raise rejected(
            f"messages[{i}]: `tool_call_id` {call_id[:64]!r} answers no tool call "
            "of the assistant message before it."
        )
    calls.discard(call_id)
    content = message.get("content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    if isinstance(content, str) or content is None:
        if content:
            result["content"] = content
    else:
        blocks = _text_blocks(content, i)
        if blocks:
            result["content"] = blocks
    return result


def _tool(index: int, tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise rejected(f"tools[{index}]: Anthropic takes function tools only.")
    function = tool["function"]
    native: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        native["description"] = function["description"]
    # Anthropic requires a schema; OpenAI's is optional ("no parameters").
    native["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return native


def _name(tool: dict[str, Any]) -> Any:
    return (tool.get("function") or {}).get("name", tool.get("name"))


def _tool_choice(
    choice: Any, tools: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(Anthropic's `tool_choice`, the tools to offer)."""
    if choice is None:
        return {"type": "auto"}, tools
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE:
            raise rejected(f"`tool_choice` {choice[:40]!r} is not auto, required or none.")
        return {"type": _TOOL_CHOICE[choice]}, tools
    kind = choice.get("type")
    if kind == "function":
        name = choice["function"]["name"]
        if not any(_name(tool) == name for tool in tools):
            raise rejected(f"`tool_choice` names {str(name)[:64]!r}, not in `tools`.")
        return {"type": "tool", "name": name}, tools
    if kind != "allowed_tools":
        raise rejected("Anthropic has function tools only: no `custom` tool_choice.")
    allowed = choice["allowed_tools"]
    names = {_name(tool) for tool in allowed["tools"]}
    offered = [tool for tool in tools if _name(tool) in names]
    if not offered:
        raise rejected(f"`tool_choice` names {sorted(map(str, names))}, none of them in `tools`.")
    return {"type": "any" if allowed["mode"] == "required" else "auto"}, offered
