"""The OpenAI wire shape every answer leaves a provider in."""

from __future__ import annotations

from typing import Any

# litellm-only keys that must not reach an OpenAI-shaped client.
_PRIVATE_KEYS = ("_hidden_params", "_response_ms", "provider_specific_fields")


def clean_litellm(data: dict[str, Any]) -> dict[str, Any]:
    for key in _PRIVATE_KEYS:
        data.pop(key, None)
    for choice in data.get("choices") or ():
        if isinstance(choice, dict):
            for key in _PRIVATE_KEYS:
                choice.pop(key, None)
            for part in ("message", "delta"):
                inner = choice.get(part)
                if isinstance(inner, dict):
                    for key in (
                        *_PRIVATE_KEYS,
                        "function_call",
                        "audio",
                        "annotations",
                        "reasoning_content",
                        "thinking_blocks",
                    ):
                        if inner.get(key) is None or key in _PRIVATE_KEYS:
                            inner.pop(key, None)
            message = choice.get("message")
            if isinstance(message, dict):
                # litellm numbers a message's tool calls; OpenAI's message has no `index`
                # (a delta's has), and a client sends the message back as it got it.
                for call in message.get("tool_calls") or ():
                    if isinstance(call, dict):
                        call.pop("index", None)
    return data
