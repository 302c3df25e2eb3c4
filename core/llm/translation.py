"""What every translated provider's answer reading shares (`core.llm.anthropic_answer`,
`core.llm.gemini_answer`, `core.llm.cohere_answer`): the failure an answer of the wrong
shape is, token counts read defensively, and an embedding in the encoding the client
asked for."""

from __future__ import annotations

import base64
import struct
from typing import Any

from core.llm.types import Deployment, ProviderError


def garbage(deployment: Deployment, what: str) -> ProviderError:
    """An answer not of the provider's documented shape: the provider's fault."""
    return ProviderError("garbage", f"{deployment.id} answered {what}")


def count(value: Any) -> int | None:
    """A token count: a non-negative JSON number (Cohere sends `37.0` as often as `37`),
    else None (never a bool, never made up)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def embedding(deployment: Deployment, vector: Any, encoding: str | None) -> Any:
    """`vector` (a list of numbers) as OpenAI sends it: the list, or for `encoding_format:
    base64` its little-endian float32 bytes in base64."""
    if not isinstance(vector, list) or not all(type(v) in (int, float) for v in vector):
        raise garbage(deployment, "an embedding that is not numbers")
    if encoding != "base64":
        return vector
    try:
        packed = struct.pack(f"<{len(vector)}f", *vector)
    except (struct.error, OverflowError) as exc:  # a number beyond float32's range
        raise garbage(deployment, "an embedding that is not numbers") from exc
    return base64.b64encode(packed).decode()
