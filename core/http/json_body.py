"""Request bodies as JSON objects, at a cost bounded before parsing starts.

The one entry point, `parse_json_object`, turns a request body into a dict or
raises `InvalidJSONError` (400 `invalid_json`). Before orjson sees the body, a
pre-scan made only of C-speed passes (`bytes.translate`, `count`, `replace`,
`split`; no Python loop over the body) refuses bodies with too many arrays and
objects, too many values or too deep a nesting, so a hostile body within
`MAX_REQUEST_BODY_BYTES` costs its worker milliseconds. (10 MiB of `[]` used
to take 8.5 s, orjson building five million lists and then a walk over every
element, during which the worker answered nothing.)

Caps, chosen so the largest legitimate bodies pass with room to spare:
- `MAX_CONTAINERS` 100,000 arrays and objects: 10,000 messages with content
  parts are ~30,000; 128 tools with large JSON schemas a few thousand.
- `MAX_VALUES` 500,000 array elements and object members: OpenAI allows 2048
  embedding inputs totalling 300,000 tokens, i.e. ~302,000 values as token
  arrays; 10,000 messages with content parts are ~50,000.
- `MAX_DEPTH` 64 levels of arrays/objects: orjson serialises at most 255 (the
  cache key re-serialises the body) and real tool schemas nest about ten deep.

Measured on a 2-core CI machine (/tmp numbers in the commit note): 8 MiB of
broad `[[],...]`, deep `[[[...`, `{{{...`, `[1,1,...]`, short strings or
`{"a":1}` objects are each refused in 10-60 ms; a legitimate 16 MiB base64 image
costs ~15 ms of pre-scan next to orjson's ~30 ms.
"""

from __future__ import annotations

from typing import Any

import orjson

from core.errors import InvalidJSONError

MAX_CONTAINERS = 100_000
MAX_VALUES = 500_000
MAX_DEPTH = 64

# translate() tables: keep only quotes, brackets and commas; map braces to brackets.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{},')
_SAME_BRACKETS = bytes.maketrans(b"{}", b"[]")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 naming what is wrong with it."""
    if not raw:
        raise InvalidJSONError("The request body is empty; expected a JSON object.")
    _prescan(raw)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSONError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidJSONError("The request body must be a JSON object.")
    return data


def _prescan(raw: bytes) -> None:
    """Refuse a body with too many containers or values, or nested too deep.

    Counting `[`, `{` and `,` anywhere over-counts (strings may hold them), so a
    body under every cap by that count is accepted after one pass. Only a body
    over a cap, or with more containers than MAX_DEPTH, is split into what lies
    inside and outside its strings, and what is inside is discounted."""
    marks = raw.translate(None, _NOT_STRUCTURE)
    containers, values = _counts(marks)
    if containers <= MAX_DEPTH and values <= MAX_VALUES:
        return
    if b"\\" in raw:  # escaped quotes and backslashes would mislead the split
        marks = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
        containers, values = _counts(marks)
    # Each string is a key or a value, so more than four quotes per allowed value
    # means too many values; refusing here also bounds the split (~55 ns a piece).
    if marks.count(b'"') > 4 * MAX_VALUES:
        raise _too_many_values()
    # Once escapes are gone every quote opens or closes a string: odd pieces are
    # string contents, even pieces what lies between strings.
    pieces = marks.split(b'"')
    inside_containers, inside_values = _counts(b"".join(pieces[1::2]))
    containers -= inside_containers
    values -= inside_values
    if containers > MAX_CONTAINERS:
        raise InvalidJSONError(
            f"The request body holds more than {MAX_CONTAINERS} JSON arrays and objects."
        )
    if values > MAX_VALUES:
        raise _too_many_values()
    if containers > MAX_DEPTH and _nests_deeper_than(b"".join(pieces[::2]), MAX_DEPTH):
        raise InvalidJSONError(f"The request body nests deeper than {MAX_DEPTH} levels.")


def _counts(marks: bytes) -> tuple[int, int]:
    """(containers, values): every comma separates two values, and a container
    holds at most one more value than it has commas."""
    containers = marks.count(b"[") + marks.count(b"{")
    return containers, marks.count(b",") + containers


def _nests_deeper_than(structure: bytes, limit: int) -> bool:
    """Whether arrays/objects nest more than `limit` deep. Each round deletes
    every innermost pair (`[]` once braces are mapped to brackets), so a body
    `limit` deep is empty after `limit` rounds: at most `limit` C passes over at
    most 2 * MAX_CONTAINERS bytes, however the body is shaped."""
    nest = structure.translate(_SAME_BRACKETS, b",")
    if nest.count(b"]") * 2 != len(nest):
        return False  # unbalanced: not JSON, and orjson names the error
    for _ in range(limit):
        shorter = nest.replace(b"[]", b"")
        if len(shorter) == len(nest):
            return False  # empty, or unbalanced: orjson names the error
        nest = shorter
    return b"[]" in nest


def _too_many_values() -> InvalidJSONError:
    return InvalidJSONError(f"The request body holds more than {MAX_VALUES} JSON values.")
