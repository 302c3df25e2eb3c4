"""Validation of OpenAI-shaped request bodies.

Bodies are parsed with orjson and validated here; the validated *dict* (not a
re-serialised model) is what travels on, so parameters Skygate does not know
pass through to the provider unchanged. Fields that would let a client choose
provider settings (`api_base`, `api_key`, `extra_headers`, ...) are refused
with a 400 before anything is sent upstream.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import BadRequestError, InvalidJSONError, ValidationFailedError

# Anything that would route, authenticate or shape the upstream call itself.
FORBIDDEN_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "api_type",
        "organization",
        "extra_headers",
        "headers",
        "extra_query",
        "extra_body",
        "custom_llm_provider",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_region_name",
        "vertex_project",
        "vertex_location",
        "vertex_credentials",
        "azure_ad_token",
        "deployment_id",
        "timeout",
        "request_timeout",
        "num_retries",
        "max_retries",
        "fallbacks",
        "mock_response",
        "litellm_logging_obj",
        "proxy_server_request",
        "callbacks",
        "metadata_headers",
    }
)
MAX_N = 128
MAX_DEPTH = 64  # orjson serialises at most 255 levels; no real request nests this deep

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _parts_have_types(cls, value: Any) -> Any:
        if isinstance(value, list):
            for part in value:
                if not isinstance(part.get("type"), str):
                    raise ValueError("each content part needs a string 'type'")
        return value


class ChatCompletionRequest(BaseModel):
    # strict: the client's dict is what travels on, so "2" must not pass as 2
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(default=None, max_length=512)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_bounded(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=512)

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if value == "" or value == []:
            raise ValueError("input must not be empty")
        if isinstance(value, list) and len(value) > 2048:
            raise ValueError("at most 2048 inputs per request")
        return value


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 naming what is wrong with it."""
    if not raw:
        raise InvalidJSONError("The request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSONError(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidJSONError("The request body must be a JSON object.")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise InvalidJSONError(f"The request body nests deeper than {MAX_DEPTH} levels.")
    return data


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def refuse_provider_settings(body: dict[str, Any]) -> None:
    forbidden = sorted(FORBIDDEN_FIELDS.intersection(body))
    if forbidden:
        raise BadRequestError(
            f"Unrecognized request argument supplied: {', '.join(forbidden)}. "
            "Provider settings are chosen by the gateway, never by the client.",
            param=forbidden[0],
            code="forbidden_parameter",
        )


def _validation_error(exc: ValidationError) -> ValidationFailedError:
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    extra = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return ValidationFailedError(
        f"Invalid value for '{param}': {first.get('msg', 'invalid')}{extra}", param=param
    )


def validate_chat(body: dict[str, Any]) -> ChatCompletionRequest:
    refuse_provider_settings(body)
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def validate_embeddings(body: dict[str, Any]) -> EmbeddingRequest:
    refuse_provider_settings(body)
    try:
        return EmbeddingRequest.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None
