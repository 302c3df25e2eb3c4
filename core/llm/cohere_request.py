"""OpenAI's chat and embedding requests as Cohere's API v2 requests (`/v2/chat`,
`/v2/embed`), as pure functions; `core.llm.cohere` does the HTTP and
`core.llm.cohere_answer` reads the answers. Shapes from Cohere's OpenAPI document
(cohere-ai/cohere-developer-experience, `cohere-openapi.yaml`).

A request is built name by name: each name of `CHAT_PARAMETERS` is translated,
deliberately dropped or refused (`TRANSLATED`, `DROPPED`, `REFUSED`; a test holds
the three equal to the allow-list), and nothing is copied wholesale, so nothing
else of the client's reaches Cohere. Refused means a 400 naming what Cohere lacks,
where dropping it would silently give the client less than it asked for (`n: 3`,
custom tools, audio, the deprecated `functions`).

Decisions beyond the one-to-one names:
- `tool_choice`: `auto` is Cohere's default (no field), `required` -> `REQUIRED`,
  `none` -> `NONE`; a named function (or `allowed_tools`) has no Cohere spelling:
  only those functions are offered, with `REQUIRED` when the choice requires a call.
- `parallel_tool_calls` is dropped: Cohere has no such setting (it may call several).
- `top_p` -> `p`, held to Cohere's range 0.01..0.99 (OpenAI's 1 means "no nucleus
  cut", and 0.99 is the nearest Cohere takes). Other numbers go as sent: one out of
  Cohere's range (temperature above 1) is Cohere's 400, its message to the client.
- `developer` messages are system messages; images go as Cohere's `image_url`
  blocks (a web URL or a data: URI, with `detail`).
- Embeddings: `input_type` is `search_document`, what litellm sent before the
  native path (vectors stay comparable with those already stored); `dimensions` ->
  `output_dimension`; at most 96 texts per call (Cohere's limit), so the provider
  sends larger inputs in batches.
"""

from __future__ import annotations

from typing import Any

from core.llm.types import Deployment, ProviderError

# Cohere's v2 endpoints below its base URL (https://api.cohere.com).
CHAT_PATH = "/v2/chat"
EMBED_PATH = "/v2/embed"
MAX_EMBED_TEXTS = 96  # per /v2/embed call; OpenAI takes up to 2048, sent in batches
EMBED_INPUT_TYPE = "search_document"

TRANSLATED = frozenset(
    {
        "messages",
        "model",  # the deployment's, never the client's
        "stream",
        "tools",
        "tool_choice",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "response_format",
    }
)
# Settings Cohere has no counterpart for, dropped as litellm's `drop_params` dropped
# them: the answer still answers the request (`stream_options`: usage is always asked
# for; `parallel_tool_calls: false`: Cohere may call several, each a valid call;
# `logprobs`: Cohere's are per text piece, not OpenAI's per token, so not translated).
DROPPED = frozenset(
    {
        "stream_options",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
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

_TOOL_CHOICE = {"required": "REQUIRED", "none": "NONE"}
_SAME_NAME = ("temperature", "seed", "frequency_penalty", "presence_penalty")


def rejected(message: str) -> ProviderError:
    """A request Cohere cannot serve as asked: the client's 400, nobody's health."""
    return ProviderError("status", message, status=400)


# -- requests ---------------------------------------------------------------------------
def chat_body(deployment: Deployment, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The `/v2/chat` request for an OpenAI chat `body` (validated by the gateway)."""
    if body.get("n") not in (None, 1):
        raise rejected("Cohere answers one choice per request: `n` must be 1.")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise rejected("Cohere deployments take `tools`, not the deprecated `functions`.")
    if body.get("audio") is not None or "audio" in (body.get("modalities") or ()):
        raise rejected("Cohere answers in text only: no `audio` output.")
    native: dict[str, Any] = {"model": deployment.model, "messages": _messages(body["messages"])}
    if stream:
        native["stream"] = True
    tools = body.get("tools") or []
    required, tools = _tool_choice(body.get("tool_choice"), tools)
    if tools:
        native["tools"] = [_tool(index, tool) for index, tool in enumerate(tools)]
        # OpenAI's `strict` is per function, Cohere's for all of them: on when all are.
        if all(tool["function"].get("strict") for tool in tools):
            native["strict_tools"] = True
    if required is not None:
        native["tool_choice"] = required
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        native["max_tokens"] = max_tokens
    for name in _SAME_NAME:
        if body.get(name) is not None:
            native[name] = body[name]
    if body.get("top_p") is not None:
        native["p"] = min(max(float(body["top_p"]), 0.01), 0.99)
    if body.get("top_k") is not None:
        native["k"] = body["top_k"]
    stop = body.get("stop")
    if stop:
        native["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = _response_format(body.get("response_format"))
    if response_format is not None:
        native["response_format"] = response_format
    return native


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": _text(content, i)})
        elif role == "user":
            out.append({"role": "user", "content": _user_content(content, i)})
        elif role == "assistant":
            out.append(_assistant(message, i))
        elif role == "tool":
            item: dict[str, Any] = {"role": "tool", "content": _text(content, i)}
            if message.get("tool_call_id") is not None:
                item["tool_call_id"] = message["tool_call_id"]
            out.append(item)
        else:
            raise rejected(f"messages[{i}]: Cohere has no {role!r} role; send `tool` messages.")
    return out


def _text(content: Any, i: int) -> str | list[dict[str, Any]]:
    """System, assistant and tool content: a string, or Cohere's text blocks (an
    assistant's refusal part is text it said)."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        kind = part.get("type")
        if kind not in ("text", "refusal"):
            raise rejected(f"messages[{i}]: Cohere takes text here, not {kind!r} content.")
        parts.append({"type": "text", "text": part.get(kind) or ""})
    return parts


def _user_content(content: Any, i: int) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":  # a web URL or a data: URI, as Cohere's ImageUrl takes
            image = {k: v for k, v in part["image_url"].items() if k in ("url", "detail")}
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise rejected(f"messages[{i}]: Cohere takes text and images, not {kind!r} content.")
    return parts


def _assistant(message: dict[str, Any], i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant"}
    if message.get("content"):
        out["content"] = _text(message["content"], i)
    calls = []
    for call in message.get("tool_calls") or ():
        if call.get("type") != "function":
            raise rejected(f"messages[{i}]: Cohere has function tool calls only.")
        function = call["function"]
        calls.append(
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": function["arguments"]},
            }
        )
    if calls:
        out["tool_calls"] = calls
    return out


def _tool(index: int, tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise rejected(f"tools[{index}]: Cohere takes function tools only.")
    function = tool["function"]
    native: dict[str, Any] = {
        "name": function["name"],
        # Cohere requires a schema; OpenAI's is optional ("no parameters").
        "parameters": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        native["description"] = function["description"]
    return {"type": "function", "function": native}


def _name(tool: dict[str, Any]) -> Any:
    return (tool.get("function") or {}).get("name", tool.get("name"))


def _tool_choice(
    choice: Any, tools: list[dict[str, Any]]
) -> tuple[str | None, list[dict[str, Any]]]:
    """(Cohere's `tool_choice` or None, the tools to offer)."""
    if choice is None or choice == "auto":
        return None, tools
    if isinstance(choice, str):
        if not tools and choice == "none":
            return None, tools
        if choice not in _TOOL_CHOICE:
            raise rejected(f"`tool_choice` {choice[:40]!r} is not auto, required or none.")
        return _TOOL_CHOICE[choice], tools
    kind = choice.get("type")
    if kind == "function":
        names, mode = {choice["function"]["name"]}, "required"
    elif kind == "allowed_tools":
        allowed = choice["allowed_tools"]
        names, mode = {_name(tool) for tool in allowed["tools"]}, allowed["mode"]
    else:
        raise rejected("Cohere has function tools only: no `custom` tool_choice.")
    offered = [tool for tool in tools if _name(tool) in names]
    if not offered:
        raise rejected(f"`tool_choice` names {sorted(map(str, names))}, none of them in `tools`.")
    return ("REQUIRED" if mode == "required" else None), offered


def _response_format(value: Any) -> dict[str, Any] | None:
    if not value or value.get("type") == "text":
        return None
    native: dict[str, Any] = {"type": "json_object"}
    schema = (value.get("json_schema") or {}).get("schema")
    if value.get("type") == "json_schema" and isinstance(schema, dict):
        native["json_schema"] = schema
    return native


def embed_texts(body: dict[str, Any]) -> list[str]:
    """The texts of an OpenAI embeddings `input`, in order."""
    value = body["input"]
    if isinstance(value, str):
        return [value]
    if all(isinstance(item, str) for item in value):
        return list(value)
    raise rejected("Cohere embeds text: `input` must be strings, not token ids.")


def embed_body(deployment: Deployment, texts: list[str], body: dict[str, Any]) -> dict[str, Any]:
    native: dict[str, Any] = {
        "model": deployment.model,
        "texts": texts,
        "input_type": EMBED_INPUT_TYPE,
        "embedding_types": ["float"],
    }
    if body.get("dimensions") is not None:
        native["output_dimension"] = body["dimensions"]
    return native
