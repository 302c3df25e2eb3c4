"""OpenAI's chat and embedding requests as Google Gemini API requests (generateContent,
streamGenerateContent?alt=sse, batchEmbedContents), as pure functions;
`core.llm.gemini_answer` reads the answers. Not wired into the gateway yet (Gemini still
goes through litellm). Shapes from Google's REST reference (ai.google.dev/api).

Each name of `CHAT_PARAMETERS` is translated, deliberately dropped or refused
(`TRANSLATED`, `DROPPED`, `REFUSED`; a test holds the three equal to the allow-list), and
nothing is copied wholesale: Google answers 400 to any field name it does not know.

Decisions beyond the one-to-one names:
- Paths are below `api_base`, the version root (`.../v1beta`). The model is quoted with
  no safe character, so it cannot add path segments or a query (`models/` taken off).
- Messages become `systemInstruction` and `contents` (`core.llm.gemini_conversation`
  holds that translation and its decisions).
- Tools go as `parametersJsonSchema`, which takes OpenAI's JSON Schema as it is
  (`parameters` is an OpenAPI subset: keys would have to be cut out of the client's
  schema, silently loosening it); `json_schema` response formats likewise go as
  `responseJsonSchema`.
- `tool_choice`: auto -> AUTO, none -> NONE, required -> ANY, a named function -> ANY
  with `allowedFunctionNames`; `allowed_tools` offers only those functions.
- `n` -> `candidateCount`: Gemini answers several candidates, OpenAI's choices.
- Numbers go as sent: one out of Google's range is Google's 400, its message to the client.
- Embeddings: at most 100 texts a call (Google's limit; the provider sends batches),
  `dimensions` -> `outputDimensionality`, no `taskType` (as litellm sent them, so new
  vectors stay comparable with those stored).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from core.llm.gemini_conversation import _conversation
from core.llm.gemini_conversation import rejected as rejected  # re-exported, and used here
from core.llm.types import Deployment

MAX_EMBED_TEXTS = 100  # per batchEmbedContents call; OpenAI takes up to 2048

TRANSLATED = frozenset(
    {
        "messages",
        "model",  # the deployment's, never the client's
        "stream",
        "tools",
        "tool_choice",
        "n",
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
# Settings Gemini has no counterpart for, dropped as litellm's `drop_params` dropped
# them: the answer still answers the request (`stream_options`: Gemini always sends
# usage; `parallel_tool_calls: false`: Gemini may call several, each a valid call;
# `logprobs`: Gemini's are not translated into OpenAI's shape; `reasoning_effort`:
# Gemini's thinking is a budget (2.5) or a level (3), not translated yet).
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
REFUSED = frozenset({"functions", "function_call", "modalities", "audio"})

_CONFIG = (  # OpenAI's name -> generationConfig's, the value as sent
    ("temperature", "temperature"),
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("seed", "seed"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
)
_TOOL_CHOICE = {"auto": "AUTO", "required": "ANY", "none": "NONE"}


def _model(deployment: Deployment) -> str:
    name = deployment.model.removeprefix("models/")
    return quote(name, safe="")


def chat_path(deployment: Deployment, *, stream: bool) -> str:
    if stream:
        return f"/models/{_model(deployment)}:streamGenerateContent?alt=sse"
    return f"/models/{_model(deployment)}:generateContent"


def embed_path(deployment: Deployment) -> str:
    return f"/models/{_model(deployment)}:batchEmbedContents"


# -- requests ---------------------------------------------------------------------------
def chat_body(deployment: Deployment, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The GenerateContentRequest for an OpenAI chat `body` (validated by the gateway);
    the same for a stream, whose difference is the path (`chat_path`)."""
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise rejected("Gemini deployments take `tools`, not the deprecated `functions`.")
    if body.get("audio") is not None or "audio" in (body.get("modalities") or ()):
        raise rejected("Gemini deployments answer in text only: no `audio` output.")
    system, contents = _conversation(body.get("messages") or [])
    native: dict[str, Any] = {"contents": contents}
    if system:
        native["systemInstruction"] = {"parts": system}
    tools = body.get("tools") or []
    config, tools = _tool_choice(body.get("tool_choice"), tools)
    if tools:
        declarations = [_declaration(index, tool) for index, tool in enumerate(tools)]
        native["tools"] = [{"functionDeclarations": declarations}]
        if config is not None:
            native["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation(body)
    if generation:
        native["generationConfig"] = generation
    return native


def _generation(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for name, native in _CONFIG:
        if body.get(name) is not None:
            config[native] = body[name]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("n") not in (None, 1):
        config["candidateCount"] = body["n"]
    response_format = body.get("response_format") or {}
    kind = response_format.get("type")
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if kind == "json_schema" and isinstance(schema, dict):
            config["responseJsonSchema"] = schema
    elif kind not in (None, "text"):
        raise rejected(
            f"`response_format` {str(kind)[:40]!r} is not text, json_object or json_schema."
        )
    return config


def _declaration(index: int, tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise rejected(f"tools[{index}]: Gemini takes function tools only.")
    function = tool["function"]
    native: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        native["description"] = function["description"]
    if function.get("parameters"):
        native["parametersJsonSchema"] = function["parameters"]
    return native


def _name(tool: dict[str, Any]) -> Any:
    return (tool.get("function") or {}).get("name", tool.get("name"))


def _tool_choice(
    choice: Any, tools: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(Gemini's functionCallingConfig or None, the tools to offer)."""
    if choice is None:
        return None, tools
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE:
            raise rejected(f"`tool_choice` {choice[:40]!r} is not auto, required or none.")
        return {"mode": _TOOL_CHOICE[choice]}, tools
    kind = choice.get("type")
    if kind == "function":
        name = choice["function"]["name"]
        if not any(_name(tool) == name for tool in tools):
            raise rejected(f"`tool_choice` names {str(name)[:64]!r}, not in `tools`.")
        return {"mode": "ANY", "allowedFunctionNames": [name]}, tools
    if kind != "allowed_tools":
        raise rejected("Gemini has function tools only: no `custom` tool_choice.")
    allowed = choice["allowed_tools"]
    names = {_name(tool) for tool in allowed["tools"]}
    offered = [tool for tool in tools if _name(tool) in names]
    if not offered:
        raise rejected(f"`tool_choice` names {sorted(map(str, names))}, none of them in `tools`.")
    return {"mode": "ANY" if allowed["mode"] == "required" else "AUTO"}, offered


# -- embeddings -------------------------------------------------------------------------
def embed_texts(body: dict[str, Any]) -> list[str]:
    """The texts of an OpenAI embeddings `input`, in order."""
    value = body["input"]
    if isinstance(value, str):
        return [value]
    if all(isinstance(item, str) for item in value):
        return list(value)
    raise rejected("Gemini embeds text: `input` must be strings, not token ids.")


def embed_body(deployment: Deployment, texts: list[str], body: dict[str, Any]) -> dict[str, Any]:
    """The batchEmbedContents request for at most `MAX_EMBED_TEXTS` texts."""
    model = f"models/{deployment.model.removeprefix('models/')}"
    extra: dict[str, Any] = {}
    if body.get("dimensions") is not None:
        extra["outputDimensionality"] = body["dimensions"]
    return {
        "requests": [
            {"model": model, "content": {"parts": [{"text": text}]}, **extra} for text in texts
        ]
    }
