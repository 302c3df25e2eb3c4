"""Validating bodies and stream chunks against OpenAI's published schema
(`tests/contracts/openai-openapi-subset.json`, provenance in its README).

`assert_valid("CreateChatCompletionResponse", body)` and
`assert_valid("CreateChatCompletionStreamResponse", chunk)` raise with every
violation listed. The document mixes JSON Schema 2020-12 with OpenAPI 3.0's
`nullable: true`, which JSON Schema ignores, so the schemas are loaded once with
each nullable turned into an explicit `null` alternative (otherwise every
`"finish_reason": null` would be rejected).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema_rs

CONTRACT = Path(__file__).resolve().parent.parent / "contracts" / "openai-openapi-subset.json"


def _with_nulls(node: Any) -> Any:
    """The node with OpenAPI 3.0 `nullable: true` spelled as JSON Schema understands it."""
    if isinstance(node, list):
        return [_with_nulls(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _with_nulls(value) for key, value in node.items()}
    if node.get("nullable") is not True:  # (a property named "nullable" is a dict)
        return node
    del node["nullable"]
    if isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
        return node
    return {"anyOf": [node, {"type": "null"}]}


@functools.cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = _with_nulls(json.loads(CONTRACT.read_text()))
    return document


@functools.cache
def _validator(name: str) -> jsonschema_rs.Draft202012Validator:
    # The whole document with a root `$ref`: its `#/components/...` references resolve
    # in place (2020-12 allows `$ref` beside other keywords; `components` is inert).
    schema = {**_document(), "$ref": f"#/components/schemas/{name}"}
    return jsonschema_rs.Draft202012Validator(schema)


def violations(name: str, instance: Any) -> list[str]:
    """Every way `instance` breaks schema `name` (`#/components/schemas/<name>`)."""
    errors = _validator(name).iter_errors(instance)
    return [f"{'/'.join(map(str, e.instance_path)) or '<root>'}: {e.message}" for e in errors]


def assert_valid(name: str, instance: Any) -> None:
    found = violations(name, instance)
    assert not found, f"not a valid {name}:\n" + "\n".join(found) + f"\n{instance!r}"


def sse_data(body: bytes) -> list[bytes]:
    """The `data:` payloads of a server-sent event stream, in order."""
    return [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]


def assert_valid_stream(body: bytes, *, include_usage: bool) -> list[dict[str, Any]]:
    """A whole chat completion stream as OpenAI sends it: every event a valid chunk,
    `[DONE]` last, and usage, when asked for, in one last chunk of its own with
    `choices: []` (never elsewhere, and nowhere when not asked for). Returns the chunks."""
    data = sse_data(body)
    assert data and data[-1] == b"[DONE]", f"the stream does not end with [DONE]: {data[-3:]!r}"
    chunks = [json.loads(payload) for payload in data[:-1]]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    with_usage = [i for i, chunk in enumerate(chunks) if chunk.get("usage") is not None]
    if include_usage:
        assert with_usage == [len(chunks) - 1], f"usage not only in the last chunk: {chunks!r}"
        assert chunks[-1]["choices"] == [], f"the usage chunk has choices: {chunks[-1]!r}"
    else:
        assert with_usage == [], f"usage sent without include_usage: {chunks!r}"
    return chunks
