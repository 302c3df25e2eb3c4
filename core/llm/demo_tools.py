"""How the offline demo model decides to call tools: deterministic rules, no model.

So that `make run` shows agents working without a provider key, the demo model
calls `calculator` for arithmetic and `current_time` for a question about the
time or date, and turns tool results into a one-sentence-per-result answer. The
same conversation always gets the same decision (ids included), so answers stay
cacheable and tests exact. `decide` returns None when no rule applies: the demo
then echoes exactly as it always has.

Never evaluates anything: the expression is only found and normalised here; the
agent's calculator tool parses it (by AST) when it runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import orjson

CALCULATOR = "calculator"
CURRENT_TIME = "current_time"
_MAX_RESULT = 300  # characters of one tool result quoted in the final answer

# Spelled-out operators become Python's, only between operands so words stay words
# ("7 times 6" -> "7*6", "6 xylophones" untouched).
_OPERAND_BEFORE = r"(?<=[\d)])\s*"
_OPERAND_AFTER = r"\s*(?=[-\d(.])"
_SPELLED: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(_OPERAND_BEFORE + words + _OPERAND_AFTER, re.IGNORECASE), op)
    for words, op in (
        (r"(?:\bto\s+the\s+power\s+of\b|\^)", "**"),
        (r"(?:\btimes\b|\bmultiplied\s+by\b|x|×)", "*"),
        (r"(?:\bdivided\s+by\b|÷)", "/"),
        (r"(?:\bplus\b)", "+"),
        (r"(?:\bminus\b)", "-"),
        (r"(?:\bmod(?:ulo)?\b)", "%"),
    )
)
_SPAN = re.compile(r"[\d.\s+\-*/%()]+")
_BINARY = re.compile(r"[\d.)]\s*(?:\*\*|[-+*/%])\s*[-+(.]*\d")
_TIME = re.compile(
    r"\bwhat(?:'s|\s+is)?\s+(?:the\s+)?(?:time|date|day)\b|\btime\s+is\s+it\b"
    r"|\b(?:current|local)\s+(?:time|date)\b|\btime\s+(?:in|at|now)\b"
    r"|\btoday'?s\s+date\b|\bdate\s+today\b|\bwhat\s+day\b",
    re.IGNORECASE,
)
_CITIES: dict[str, str] = {
    "tokyo": "Asia/Tokyo",
    "london": "Europe/London",
    "paris": "Europe/Paris",
    "berlin": "Europe/Berlin",
    "moscow": "Europe/Moscow",
    "new york": "America/New_York",
    "chicago": "America/Chicago",
    "los angeles": "America/Los_Angeles",
    "san francisco": "America/Los_Angeles",
    "toronto": "America/Toronto",
    "sao paulo": "America/Sao_Paulo",
    "são paulo": "America/Sao_Paulo",
    "sydney": "Australia/Sydney",
    "singapore": "Asia/Singapore",
    "hong kong": "Asia/Hong_Kong",
    "shanghai": "Asia/Shanghai",
    "beijing": "Asia/Shanghai",
    "mumbai": "Asia/Kolkata",
    "delhi": "Asia/Kolkata",
    "dubai": "Asia/Dubai",
    "utc": "UTC",
}
_CITY = re.compile(r"\b(" + "|".join(map(re.escape, _CITIES)) + r")\b", re.IGNORECASE)
_RESULT_KEYS = ("result", "value", "output", "iso", "datetime", "time", "now", "text")


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """Either tool calls to make or a final text answer built from tool results."""

    tool_calls: tuple[ToolCall, ...] = ()
    text: str | None = None


def text_of(content: Any) -> str:
    """Plain text of a message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def find_expression(text: str) -> str | None:
    """The arithmetic in `text`, normalised to Python syntax, or None.

    "what is 12*(3+4)?" -> "12*(3+4)"; "compute 2^10" -> "2**10";
    "how much is 7 times 6" -> "7*6". The longest candidate wins.
    """
    for pattern, op in _SPELLED:
        text = pattern.sub(op, text)
    best: str | None = None
    for match in _SPAN.finditer(text):
        candidate = _trim(match.group())
        if candidate and _BINARY.search(candidate) and (best is None or len(candidate) > len(best)):
            best = candidate
    return None if best is None else re.sub(r"\s+", "", best)


def _trim(span: str) -> str:
    """Drop sentence punctuation and unmatched parentheses around an expression."""
    span = span.strip().lstrip("*/% \t\n").rstrip(".+-*/% \t\n")
    while span.startswith("(") and span.count("(") > span.count(")"):
        span = span[1:].lstrip()
    while span.endswith(")") and span.count(")") > span.count("("):
        span = span[:-1].rstrip()
    return span if span.count("(") == span.count(")") else ""


def asks_time(text: str) -> bool:
    return _TIME.search(text.replace("\u2019", "'")) is not None


def time_arguments(text: str) -> dict[str, str]:
    """`{"timezone": ...}` for a well-known city named in `text`, else `{}`."""
    city = _CITY.search(text)
    return {"timezone": _CITIES[city.group(1).lower()]} if city else {}


def decide(body: dict[str, Any]) -> Decision | None:
    """What the demo model does with this chat request instead of echoing, if anything."""
    messages = [m for m in body.get("messages") or () if isinstance(m, dict)]
    tools = _offered(body.get("tools"))
    choice = body.get("tool_choice")
    if tools and choice != "none":
        forced = _forced(choice)
        if forced is not None or choice == "required" or not _tool_results(messages):
            calls = _tool_calls(messages, tools, forced, choice == "required")
            if body.get("parallel_tool_calls") is False:
                calls = calls[:1]
            if calls:
                return Decision(tool_calls=tuple(calls))
    results = _tool_results(messages)
    if results:
        return Decision(text=_final_answer(messages, results))
    return None


def _offered(tools: Any) -> list[str]:
    names: list[str] = []
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            names.append(name)
    return names


def _forced(choice: Any) -> str | None:
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return name if isinstance(name, str) and name else None
    return None


def _tool_calls(
    messages: list[dict[str, Any]], tools: list[str], forced: str | None, required: bool
) -> list[ToolCall]:
    last = messages[-1] if messages else {}
    user_text = text_of(last.get("content")) if last.get("role") == "user" else ""
    if forced is not None or required:  # a forced call reads the last question, wherever
        user_text = _last_user_text(messages)
    found: list[tuple[str, dict[str, str]]] = []
    for name in tools:
        arguments = _arguments(name, user_text)
        if arguments is not None:
            found.append((name, arguments))
    if forced is not None:
        found = [(forced, dict(found).get(forced) or _loose_arguments(forced, user_text))]
    elif required:
        found = found[:1] or [(tools[0], {})]
    digest = hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return [
        ToolCall(
            id=f"call_demo_{hashlib.sha256(f'{digest}:{i}'.encode()).hexdigest()[:24]}",
            name=name,
            arguments=json.dumps(arguments, ensure_ascii=False),
        )
        for i, (name, arguments) in enumerate(found)
    ]


def _arguments(name: str, text: str) -> dict[str, str] | None:
    """The arguments when the rule for `name` matches `text`, else None."""
    if name == CALCULATOR:
        expression = find_expression(text)
        return None if expression is None else {"expression": expression}
    if name == CURRENT_TIME and asks_time(text):
        return time_arguments(text)
    return None


def _loose_arguments(name: str, text: str) -> dict[str, str]:
    """A forced call's arguments when its rule did not match: what can still be read."""
    return time_arguments(text) if name == CURRENT_TIME else {}


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def _tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `tool` messages ending the conversation (empty when it ends otherwise)."""
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.append(message)
    return results[::-1]


def _final_answer(messages: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    """One sentence per result, in the order the assistant made the calls."""
    before = messages[-len(results) - 1] if len(messages) > len(results) else {}
    calls = before.get("tool_calls") if before.get("role") == "assistant" else None
    order: dict[str, tuple[int, str]] = {}
    for position, call in enumerate(calls if isinstance(calls, list) else ()):
        if isinstance(call, dict) and isinstance(call.get("id"), str):
            function = call.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            order[call["id"]] = (position, name if isinstance(name, str) else "")
    ranked = sorted(
        enumerate(results),
        key=lambda item: order.get(str(item[1].get("tool_call_id")), (len(order), ""))[0],
    )
    sentences = []
    for _, result in ranked:
        name = order.get(str(result.get("tool_call_id")), (0, ""))[1]
        sentences.append(_sentence(name, text_of(result.get("content"))))
    return " ".join(sentences)


def _sentence(name: str, content: str) -> str:
    value: Any = content
    try:
        value = json.loads(content)
    except ValueError:
        pass
    if isinstance(value, dict):
        if value.get("error"):
            return f"The {name or 'tool'} call failed: {_short(value['error'])}."
        key = next((k for k in _RESULT_KEYS if k in value), None)
        if key is None and len(value) == 1:
            key = next(iter(value))
        value = content if key is None else value[key]
    text = _short(value)
    if name == CALCULATOR:
        return f"The result is {text}."
    if name == CURRENT_TIME:
        return f"It is {text}."
    return f"The {name} tool returned {text}." if name else f"The tool returned {text}."


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    if len(text) > _MAX_RESULT:
        text = text[: _MAX_RESULT - 1] + "…"
    return text.rstrip(".")
