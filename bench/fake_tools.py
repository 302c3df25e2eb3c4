"""When the fake providers call a tool, and what they say otherwise: one rule for every wire
format that speaks tools natively (Anthropic Messages, Gemini, Cohere).

Each format's module reads its own request into a `Turn` (declared functions, the tool
choice, the last user text, the tool results the last message carries) and renders the
answer `decide` gives back in its own shape, so a test sees the same behaviour through
every provider:

- the last message carries tool results: a text answer quoting them in order
  (``"tool results: sunny, 21 C; 14:05"``);
- tools are offered, not switched off, and the prompt asks for one (it mentions the
  weather, names a declared function, or the tool choice forces a call): one call to
  each function the prompt names, in declaration order, else to the first (or the
  forced one); one call only when parallel calls are off. Arguments are always
  ``{"city": "Paris"}``;
- otherwise ``"echo: <last user text>"``, as the OpenAI fake answers.

Deterministic: the same request always gets the same answer, so answers can be cached.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["ARGUMENTS", "Answer", "Turn", "decide", "text_of", "vector"]

ARGUMENTS: dict[str, Any] = {"city": "Paris"}
_WEATHER = re.compile(r"\bweather\b", re.IGNORECASE)
_MAX_REPLY = 200
_EMBED_DIMS = 8


@dataclass(frozen=True, slots=True)
class Turn:
    """A provider-neutral reading of one request."""

    functions: tuple[str, ...] = ()  # declared function names, in order
    last_user: str = ""  # text of the last user message
    results: tuple[str, ...] = ()  # tool results in the last message (empty: it has none)
    forced: bool = False  # the tool choice requires a call
    allowed: tuple[str, ...] = ()  # the tool choice narrows the calls to these names
    disabled: bool = False  # the tool choice forbids calls
    single: bool = False  # parallel calls are off: at most one


@dataclass(frozen=True, slots=True)
class Answer:
    """Either the names of the functions to call, in order, or a text."""

    calls: tuple[str, ...]
    text: str


def decide(turn: Turn) -> Answer:
    if turn.results:
        return Answer((), ("tool results: " + "; ".join(turn.results))[:_MAX_REPLY])
    text = ("echo: " + turn.last_user)[:_MAX_REPLY]
    if not turn.functions or turn.disabled:
        return Answer((), text)
    pool = tuple(name for name in turn.functions if name in turn.allowed) or turn.functions
    named = tuple(name for name in pool if name in turn.last_user)
    if not (turn.forced or named or _WEATHER.search(turn.last_user)):
        return Answer((), text)
    chosen = named or pool[:1]
    return Answer(chosen[:1] if turn.single else chosen, "")


def text_of(content: Any) -> str:
    """Plain text of a message content in any of the formats: a string, or a list of
    parts/blocks whose ``text`` fields are joined (Anthropic and Cohere blocks, Gemini
    parts). A Cohere document block contributes its ``data``."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part.get("document"), dict):
                data = part["document"].get("data")
                texts.append(data if isinstance(data, str) else str(data))
    return " ".join(texts)


def vector(text: str) -> list[float]:
    """A deterministic 8-dimensional embedding of `text` (as the OpenAI fake makes them)."""
    digest = hashlib.blake2b(text.encode(), digest_size=2 * _EMBED_DIMS).digest()
    return [round(v / 32767.5 - 1.0, 6) for v in struct.unpack(f"<{_EMBED_DIMS}H", digest)]
