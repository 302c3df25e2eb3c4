"""How the fake upstream reads an Anthropic Messages request's tools (the answer itself is
rendered in `bench.fake_upstream`), per Anthropic's API reference:

- ``tools``: ``{"name", "description", "input_schema"}``; ``tool_choice``: ``{"type":
  "auto" | "any" | "none"}`` or ``{"type": "tool", "name"}``, each with an optional
  ``disable_parallel_tool_use`` (at most one ``tool_use`` block in the answer);
- tool results come back as ``tool_result`` blocks (``tool_use_id``, ``content`` as a
  string or text blocks) in the user message right after the assistant message that
  holds the ``tool_use`` blocks. Anthropic answers 400 when a ``tool_use`` has no
  ``tool_result`` immediately after, or a ``tool_result`` answers no ``tool_use``: so does
  the fake (`Invalid`).
"""

from __future__ import annotations

from typing import Any

from bench.fake_tools import Turn, text_of

__all__ = ["Invalid", "turn"]

_CHOICES = frozenset({"auto", "any", "none", "tool"})


class Invalid(Exception):
    """A request Anthropic answers with 400 invalid_request_error."""


def _tool_results(content: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def _check_pairs(messages: list[Any]) -> None:
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        uses = [
            b.get("id")
            for b in content or ()
            if isinstance(content, list) and isinstance(b, dict) and b.get("type") == "tool_use"
        ]
        results = _tool_results(content)
        if results:
            previous = messages[i - 1].get("content") if i else None
            asked = {
                b.get("id")
                for b in previous or ()
                if isinstance(previous, list)
                and isinstance(b, dict)
                and b.get("type") == "tool_use"
            }
            for block in results:
                if block.get("tool_use_id") not in asked:
                    raise Invalid(
                        f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` "
                        f"blocks: {block.get('tool_use_id')}. Each `tool_result` block must have "
                        "a corresponding `tool_use` block in the previous message."
                    )
        if uses:
            following = messages[i + 1].get("content") if i + 1 < len(messages) else None
            answered = {b.get("tool_use_id") for b in _tool_results(following)}
            missing = [use for use in uses if use not in answered]
            if missing and i + 1 < len(messages):
                raise Invalid(
                    f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(map(str, missing))}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message."
                )


def turn(data: dict[str, Any], last_user: str) -> Turn:
    """The request's tool reading (`last_user`: the text of its last user message)."""
    messages = data.get("messages")
    if isinstance(messages, list):
        _check_pairs(messages)
    functions: list[str] = []
    for tool in data.get("tools") or ():
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str):
            raise Invalid("tools: each tool needs a `name`")
        functions.append(name)
    choice = data.get("tool_choice") or {"type": "auto"}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in _CHOICES:
        raise Invalid(
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'auto', 'any', 'tool', 'none'"
        )
    if kind == "tool" and choice.get("name") not in functions:
        raise Invalid(f"tool_choice: tool {choice.get('name')!r} is not among the tools")
    last = messages[-1] if isinstance(messages, list) and messages else {}
    results = tuple(text_of(block.get("content")) for block in _tool_results(last.get("content")))
    return Turn(
        functions=tuple(functions),
        last_user=last_user,
        results=results if last.get("role") == "user" else (),
        forced=kind in ("any", "tool"),
        allowed=(choice["name"],) if kind == "tool" else (),
        disabled=kind == "none",
        single=bool(choice.get("disable_parallel_tool_use")),
    )
