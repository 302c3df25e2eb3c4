"""Request bodies checked against `core.gateway.schemas`, and the 400s they get: a name
nobody defines (at the top level or nested) refused as OpenAI refuses it, "Unrecognized
request argument supplied: <name>", before its value is looked at; any other problem as
one message naming the field that got furthest into the value."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.errors import BadRequestError, ValidationFailedError
from core.gateway.schemas import ChatCompletionRequest, EmbeddingRequest
from core.llm.parameters import CHAT_PARAMETERS, EMBEDDING_PARAMETERS

MAX_NAMES_LISTED = 10  # an error names at most this many unknown fields ...
MAX_NAME_CHARS = 100  # ... each cut to this length (a client may send a 1 MiB key)


def _unrecognized(names: list[str]) -> BadRequestError:
    """OpenAI's answer to a name it does not define (plus the parameter, which it omits)."""
    shown = [name[:MAX_NAME_CHARS] for name in names[:MAX_NAMES_LISTED]]
    more = f" (and {len(names) - len(shown)} more)" if len(names) > len(shown) else ""
    plural = "s" if len(names) > 1 else ""
    return BadRequestError(
        f"Unrecognized request argument{plural} supplied: {', '.join(shown)}{more}",
        param=names[0][: MAX_NAME_CHARS * 4],
        code="forbidden_parameter",
    )


def refuse_unknown_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """The one allow-list check: any top-level name outside `allowed` is a 400."""
    if body.keys() <= allowed:
        return
    raise _unrecognized(sorted(name for name in body if name not in allowed))


def _is_tag(part: Any) -> bool:
    """pydantic's names for union members in an error location (`str`,
    `list[ContentPart]`, `ToolChoice`, `literal['none']`), which are not fields."""
    if isinstance(part, int):
        return False
    text = str(part)
    return (
        "[" in text
        or text[:1].isupper()
        or text in {"str", "int", "float", "bool", "dict", "list", "none"}
    )


def _location(loc: tuple[int | str, ...], *, keep_last: bool) -> str:
    last = len(loc) - 1
    parts = [str(p) for i, p in enumerate(loc) if (keep_last and i == last) or not _is_tag(p)]
    return ".".join(parts)


def _validation_error(exc: ValidationError) -> BadRequestError:
    errors = exc.errors()
    unknown = [
        _location(e["loc"], keep_last=True) for e in errors if e["type"] == "extra_forbidden"
    ]
    if unknown:  # a nested name nobody defines is refused like a top-level one
        return _unrecognized(unknown)
    # In a union (`content`: a string or a list of parts) every branch reports; the one
    # that got furthest into the value names the real problem.
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    param = _location(first.get("loc", ()), keep_last=False) or None
    extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return ValidationFailedError(
        f"Invalid value for '{param}': {first.get('msg', 'invalid')}{extra}", param=param
    )


def validate_chat(body: dict[str, Any]) -> ChatCompletionRequest:
    refuse_unknown_fields(body, CHAT_PARAMETERS)
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def validate_embeddings(body: dict[str, Any]) -> EmbeddingRequest:
    refuse_unknown_fields(body, EMBEDDING_PARAMETERS)
    try:
        return EmbeddingRequest.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None
