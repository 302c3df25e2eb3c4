"""Request bodies and paths shared by the tests: one builder per body shape."""

from __future__ import annotations

from typing import Any

CHAT = "/api/v1/chat/completions"


def chat(text: str = "hello", model: str = "primary", **extra: Any) -> dict[str, Any]:
    """A chat completion body: one user message, `extra` as further parameters
    (they may replace `messages` too)."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}
