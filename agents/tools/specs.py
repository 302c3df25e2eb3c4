"""What an agent lists under `tools:` (YAML or the admin API), validated.

One entry is a built-in name (`calculator`, `current_time`) or an object:

    {builtin: http_fetch, allowed_hosts: [example.com, "*.example.org"], max_bytes, timeout_seconds}
    {type: http, name, description, method: GET|POST, url, parameters, headers, ...}
    {type: client, name, description, parameters}

`ToolSpec` dispatches on the entry's shape by hand instead of a tagged union, so an
error's location is `tools.2.url`, which the YAML loader can walk back to its line.

Declared HTTP tools carry secrets only as `${ENV_NAME}` references inside header
values, read when the tool runs. Header values are `SecretStr`s: masked in repr(),
in validation errors, and in every dump, unless the dump is for storage
(`spec.model_dump(mode="json", context={"reveal_secrets": True})`); the default dump
keeps the `${NAME}` references and shows literal text as `***`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    FieldSerializationInfo,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    SerializationInfo,
    TypeAdapter,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from agents.tools.base import TOOL_NAME, check_parameters_schema
from agents.tools.hosts import HostRule
from core.yaml_models import StrictModel, field_error, raise_field_errors

BUILTIN_NAMES = ("calculator", "current_time")  # the ones listed by name alone
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# Set by the HTTP client itself; a tool that chose them could smuggle a request or
# point the Host at another site behind the same address.
_RESERVED_HEADERS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te",
        "trailer", "upgrade", "proxy-authorization", "proxy-connection",
    }
)  # fmt: skip
MAX_BYTES_LIMIT = 10 * 1024 * 1024
MASK = "***"

ToolName = Annotated[str, Field(pattern=TOOL_NAME.pattern)]
MaxBytes = Annotated[int, Field(ge=1, le=MAX_BYTES_LIMIT)]
Timeout = Annotated[float, Field(gt=0, le=300)]
_EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


def _valid_parameters(value: dict[str, Any]) -> dict[str, Any]:
    problem = check_parameters_schema(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Parameters = Annotated[dict[str, Any], AfterValidator(_valid_parameters)]


class HttpFetchSpec(StrictModel):
    """The `http_fetch` built-in, with the hosts this agent may fetch from."""

    builtin: Literal["http_fetch"]
    allowed_hosts: tuple[str, ...] = Field(min_length=1)
    max_bytes: MaxBytes | None = None
    timeout_seconds: Timeout | None = None

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        errors: list[InitErrorDetails] = []
        for index, entry in enumerate(hosts):
            try:
                HostRule.parse(entry)
            except ValueError as exc:
                error = field_error((index,), "allowed_host", "{reason}", entry, reason=str(exc))
                errors.append(error)
        if errors:
            raise_field_errors("HttpFetchSpec", errors)
        return hosts


@dataclass(frozen=True, slots=True)
class UrlTemplate:
    """A declared tool's URL, split: `{name}` placeholders may appear only in the path."""

    scheme: str
    netloc: str
    path: str
    query: str
    placeholders: tuple[str, ...]
    host: HostRule  # the tool's only allowed host, with its exact port


def parse_url_template(url: str) -> UrlTemplate:
    """`url` split for substitution, or ValueError saying what is wrong with it."""
    if len(url) > 2048:
        raise ValueError("url is longer than 2048 characters")
    if "${" in url:
        raise ValueError("secrets belong in a header value as ${NAME}, not in the url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("url must start with http:// or https://")
    if parts.fragment or url.endswith("#"):
        raise ValueError("url may not have a #fragment")
    if not parts.netloc or "@" in parts.netloc or any(c in parts.netloc for c in "{}"):
        raise ValueError("url needs a fixed host (no user name, no placeholder in the host)")
    if any(c in parts.query for c in "{}"):
        raise ValueError("placeholders go in the path; other arguments become the query")
    names = tuple(PLACEHOLDER.findall(parts.path))
    bad = [name for name in names if not _IDENTIFIER.match(name)]
    if bad:
        raise ValueError(f"url placeholder {{{bad[0]}}} is not a parameter name")
    if any(c in PLACEHOLDER.sub("", parts.path) for c in "{}"):
        raise ValueError("url has an unmatched { or }")
    if parts.netloc.startswith("*."):
        raise ValueError("url needs a fixed host, not a wildcard")
    rule = HostRule.parse(parts.netloc)
    port = rule.port or (443 if parts.scheme == "https" else 80)
    return UrlTemplate(
        scheme=parts.scheme,
        netloc=parts.netloc,
        path=parts.path or "/",
        query=parts.query,
        placeholders=tuple(dict.fromkeys(names)),
        host=HostRule(host=rule.host, wildcard=False, port=port),
    )


def header_problem(name: str, value: str) -> str | None:
    """Why a declared header cannot be sent, or None. Never quotes the value."""
    if not _HEADER_NAME.match(name):
        return f"header name {name!r} is not a valid HTTP header name"
    if name.lower() in _RESERVED_HEADERS:
        return f"header {name} is set by the HTTP client and cannot be declared"
    if len(value) > 4096:
        return f"header {name} is longer than 4096 characters"
    if not sendable_header_value(value):
        return f"header {name} must be printable ASCII (no line break or control character)"
    if "${" in ENV_REF.sub("", value):
        return f"header {name} has a ${{...}} that is not ${{ENV_NAME}} (letters, digits, _)"
    return None


def sendable_header_value(value: str) -> bool:
    """Printable ASCII and tabs only: what HTTP/1.1 carries without smuggling a line."""
    return value.isascii() and all(c == "\t" or 0x20 <= ord(c) < 0x7F for c in value)


def masked(value: str) -> str:
    """A header value for showing: `${NAME}` references kept, literal text as `***`."""
    pieces = ENV_REF.split(value)  # literal, name, literal, name, ..., literal
    return "".join(
        ("${" + piece + "}" if index % 2 else MASK) if (index % 2 or piece) else ""
        for index, piece in enumerate(pieces)
    )


class HttpToolSpec(StrictModel):
    """A declared HTTP tool. Placeholders in the URL path must be required parameters;
    the other arguments go to the query string (GET) or a JSON body (POST)."""

    type: Literal["http"]
    name: ToolName
    description: str = ""
    method: Literal["GET", "POST"] = "GET"
    url: str
    parameters: Parameters = Field(default_factory=lambda: dict(_EMPTY_OBJECT))
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_seconds: Timeout | None = None
    max_bytes: MaxBytes | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parse_url_template(url)
        return url

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        errors: list[InitErrorDetails] = []
        for name, value in headers.items():
            problem = header_problem(name, value.get_secret_value())
            if problem is not None:
                errors.append(field_error((name,), "header", "{problem}", MASK, problem=problem))
        if errors:
            raise_field_errors("HttpToolSpec", errors)
        return headers

    @model_validator(mode="after")
    def _placeholders_are_parameters(self) -> HttpToolSpec:
        properties = self.parameters.get("properties") or {}
        required = self.parameters.get("required") or []
        errors = [
            field_error(
                ("url",),
                "placeholder",
                "url placeholder {placeholder} must be a required parameter "
                "(in parameters.properties and parameters.required)",
                self.url,
                placeholder="{" + name + "}",
            )
            for name in self.template.placeholders
            if name not in properties or name not in required
        ]
        if errors:
            raise_field_errors("HttpToolSpec", errors)
        return self

    @property
    def template(self) -> UrlTemplate:
        return parse_url_template(self.url)

    def env_names(self) -> tuple[str, ...]:
        """The environment variables this tool reads when it runs."""
        found = (ENV_REF.findall(v.get_secret_value()) for v in self.headers.values())
        return tuple(dict.fromkeys(name for names in found for name in names))

    @field_serializer("headers")
    def _dump_headers(
        self, headers: dict[str, SecretStr], info: FieldSerializationInfo
    ) -> dict[str, str]:
        reveal = bool(info.context and info.context.get("reveal_secrets"))
        return {
            name: value.get_secret_value() if reveal else masked(value.get_secret_value())
            for name, value in headers.items()
        }


class ClientToolSpec(StrictModel):
    """A tool the API client executes; the run pauses in `requires_action` for it."""

    type: Literal["client"]
    name: ToolName
    description: str = ""
    parameters: Parameters = Field(default_factory=lambda: dict(_EMPTY_OBJECT))


BuiltinName = Literal["calculator", "current_time"]
ToolSpecValue = BuiltinName | HttpFetchSpec | HttpToolSpec | ClientToolSpec
_FETCH = TypeAdapter(HttpFetchSpec)
_HTTP = TypeAdapter(HttpToolSpec)
_CLIENT = TypeAdapter(ClientToolSpec)


def _parse_tool(value: Any, info: ValidationInfo) -> ToolSpecValue:
    if isinstance(value, HttpFetchSpec | HttpToolSpec | ClientToolSpec):
        return value
    if isinstance(value, str):
        if value in BUILTIN_NAMES:
            return cast(BuiltinName, value)
        if value == "http_fetch":
            raise ValueError(
                "http_fetch needs the hosts it may reach: "
                "write {builtin: http_fetch, allowed_hosts: [...]}"
            )
        raise ValueError(
            f"unknown built-in tool {value!r} (built-ins: calculator, current_time, "
            "http_fetch; or a mapping with type: http or type: client)"
        )
    if not isinstance(value, dict):
        raise ValueError("a tool is a built-in name or a mapping")
    if "builtin" in value:
        if value["builtin"] in BUILTIN_NAMES:
            raise ValueError(f"{value['builtin']} takes no options: list it by its name")
        return _FETCH.validate_python(value, context=info.context)
    kind = value.get("type")
    if kind == "http":
        return _HTTP.validate_python(_hide_headers(value), context=info.context)
    if kind == "client":
        return _CLIENT.validate_python(value, context=info.context)
    raise ValueError("a tool mapping needs builtin: http_fetch, or type: http or type: client")


def _hide_headers(value: dict[str, Any]) -> dict[str, Any]:
    """Header values as SecretStr before validation, so no error (a missing `url`
    reports the whole mapping as its input) can quote one."""
    headers = value.get("headers")
    if not isinstance(headers, dict):
        return value
    hidden = {k: SecretStr(v) if isinstance(v, str) else v for k, v in headers.items()}
    return {**value, "headers": hidden}


def _dump_tool(value: ToolSpecValue, info: SerializationInfo) -> Any:
    if isinstance(value, str):
        return value
    return value.model_dump(mode=info.mode, context=info.context)


ToolSpec = Annotated[
    ToolSpecValue,
    PlainValidator(_parse_tool, json_schema_input_type=ToolSpecValue),
    PlainSerializer(_dump_tool),
]


def tool_name(spec: ToolSpecValue) -> str:
    """The name the model calls the tool by."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, HttpFetchSpec):
        return "http_fetch"
    return spec.name
