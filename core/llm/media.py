"""What the translations to Anthropic's and Gemini's requests read the same way from a
client's messages: images, taken only as `data:` URLs (a web URL would make the provider
fetch whatever the client names, from the provider's network and on the deployment's
account: a client's 400 instead, before anything is sent), and the arguments of the tool
calls a client sends back, which both providers take only as a JSON object."""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import Any

import orjson

from core.llm.types import ProviderError


def data_image(url: Any, i: int, provider: str, types: frozenset[str]) -> tuple[str, str]:
    """(media type, base64 data) of the image at `url` in `messages[i]`, which must be a
    base64 `data:` URL of one of `types`; anything else is the client's 400."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise ProviderError(
            "status",
            f"messages[{i}]: {provider} deployments take images as data: URLs "
            "(data:image/png;base64,...), not web URLs.",
            status=400,
        )
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or not data or encoding != "base64" or media_type not in types:
        raise ProviderError(
            "status",
            f"messages[{i}]: an image must be a base64 data: URL of {', '.join(sorted(types))}.",
            status=400,
        )
    base64_data(data, i, f"the {media_type} data")
    return media_type, data


def base64_data(data: Any, i: int, what: str) -> None:
    """Refuse `data` in `messages[i]` that is not valid base64 (the client's 400)."""
    try:
        b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ProviderError(
            "status", f"messages[{i}]: {what} is not valid base64.", status=400
        ) from None


def call_arguments(call: dict[str, Any], i: int, j: int, provider: str) -> dict[str, Any]:
    """The arguments of `messages[i].tool_calls[j]` (a function call) as an object; any
    other call, or arguments that are not a JSON object, is the client's 400."""
    if call.get("type") != "function":
        raise ProviderError(
            "status", f"messages[{i}]: {provider} has function tool calls only.", status=400
        )
    try:
        arguments = orjson.loads(call["function"].get("arguments") or "{}")
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise ProviderError(
            "status",
            f"messages[{i}].tool_calls[{j}]: {provider} takes arguments as a JSON object.",
            status=400,
        )
    return arguments
