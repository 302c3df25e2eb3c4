"""Validation of OpenAI-shaped request bodies, and the allow-list of what may reach a provider.

A body may carry only the parameters OpenAI defines for its endpoint (chat:
`CreateChatCompletionRequest` in the contract, `tests/contracts/`; embeddings:
OpenAI's API reference) plus the short list of provider extras below. Any
other top-level name is refused the way OpenAI refuses it — 400, "Unrecognized
request argument supplied: <name>" — before its value is even looked at, and
nothing is sent upstream. That is what keeps a client from choosing a
provider's destination, credentials, headers, TLS settings, timeouts, retries,
mock answers or model list: litellm takes every one of those as a keyword
argument beside the OpenAI ones (`model_list`, `api_base`, `mock_response`,
`provider_specific_header`, ... several hundred names), so only an allow-list
closes the class. The nested objects litellm reads (messages and their content
parts, tools, tool choice, response format, stream options) are closed the
same way.

The checks and the errors they answer are `core.gateway.validation`'s. Bodies are
parsed by `core.http.json_body`; the validated *dict* (not a
re-serialised model) is what travels on, and each provider copies from it only
the names allowed (`core.llm.parameters`, read by `core.llm.direct` and
`core.llm.litellm_provider`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

MAX_N = 128

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class _Closed(BaseModel):
    """A nested object with exactly the keys it declares; strict, because the client's
    dict is what travels on, so "2" must not pass as 2."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _by_type(**kinds: str) -> Discriminator:
    """Tells the members of a union apart by the object's `type` (`{"type": "text", ...}`
    is a `TextPart`), in pydantic's core: a Python validator per item doubled the cost of
    validating tools. Members are tagged by class name, which `_location` leaves out."""

    def tag(value: Any) -> str | None:
        if isinstance(value, dict):
            return kinds.get(value.get("type"))  # type: ignore[arg-type]
        return type(value).__name__ if isinstance(value, BaseModel) else None

    return Discriminator(
        tag,
        custom_error_type="invalid_type",
        custom_error_message=f"'type' must be one of: {', '.join(kinds)}",
    )


def _no_scheme(value: str | None) -> str | None:
    """litellm turns a URL-shaped file id into a fetch by the provider with the gateway's
    credentials (a `gs://` id on Vertex reads any bucket its service account can);
    OpenAI's file ids and base64 data never contain a scheme."""
    if value is not None and "://" in value:
        raise ValueError("must be a file id or base64 data, not a URL")
    return value


class CacheControl(_Closed):
    """Anthropic's prompt-caching mark, which litellm passes through: a provider extra
    worth keeping (it cuts the cost of a long cached prompt by up to 90%) that only
    marks a prefix as cacheable."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class ImageURL(_Closed):
    url: str
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _http_or_data(cls, value: str) -> str:
        # OpenAI takes a web URL or a data URL. Other schemes are read by some providers
        # with the gateway's credentials (gs:// on Vertex), never the client's.
        if not value.startswith(("https://", "http://", "data:")):
            raise ValueError("must be an http(s) URL or a data: URL")
        return value


class InputAudio(_Closed):
    data: str
    format: Literal["wav", "mp3"]


class FileRef(_Closed):
    file_id: str | None = None
    file_data: str | None = None
    filename: str | None = None

    @field_validator("file_id", "file_data")
    @classmethod
    def _not_urls(cls, value: str | None) -> str | None:
        return _no_scheme(value)


class _Part(_Closed):
    prompt_cache_breakpoint: dict[str, Any] | None = None
    cache_control: CacheControl | None = None


class TextPart(_Part):
    type: Literal["text"]
    text: str


class ImagePart(_Part):
    type: Literal["image_url"]
    image_url: ImageURL


class AudioPart(_Part):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FilePart(_Part):
    type: Literal["file"]
    file: FileRef


class RefusalPart(_Part):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    Annotated[TextPart, Tag("TextPart")]
    | Annotated[ImagePart, Tag("ImagePart")]
    | Annotated[AudioPart, Tag("AudioPart")]
    | Annotated[FilePart, Tag("FilePart")]
    | Annotated[RefusalPart, Tag("RefusalPart")],
    _by_type(
        text="TextPart",
        image_url="ImagePart",
        input_audio="AudioPart",
        file="FilePart",
        refusal="RefusalPart",
    ),
]


class FunctionCall(_Closed):
    name: str
    arguments: str


class CustomCall(_Closed):
    name: str
    input: str


class FunctionToolCall(_Closed):
    id: str
    type: Literal["function"]
    function: FunctionCall


class CustomToolCall(_Closed):
    id: str
    type: Literal["custom"]
    custom: CustomCall


ToolCall = Annotated[
    Annotated[FunctionToolCall, Tag("FunctionToolCall")]
    | Annotated[CustomToolCall, Tag("CustomToolCall")],
    _by_type(function="FunctionToolCall", custom="CustomToolCall"),
]


class AudioReference(_Closed):
    id: str


class Message(_Closed):
    """The union of OpenAI's request message fields (the roles share one shape here:
    which role may carry which field is the provider's check), plus two kinds of extra:
    - `cache_control`, Anthropic's prompt caching (see `CacheControl`);
    - fields of an answer that a client sends back as the next turn's history, as
      OpenAI's SDKs do (`messages.append(completion.choices[0].message)`):
      `annotations` (OpenAI's own answers carry it), and `reasoning_content` and
      `thinking_blocks` (Skygate's answers through litellm when Anthropic thinks;
      Anthropic needs the signed blocks back to continue a tool call).
    None of them names a destination; any other key is refused."""

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    audio: AudioReference | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    tool_call_id: str | None = None
    cache_control: CacheControl | None = None
    annotations: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None
    thinking_blocks: list[dict[str, Any]] | None = None


class FunctionDefinition(_Closed):
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    cache_control: CacheControl | None = None


class CustomToolDefinition(_Closed):
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    format: dict[str, Any] | None = None


class FunctionTool(_Closed):
    type: Literal["function"]
    function: FunctionDefinition
    cache_control: CacheControl | None = None


class CustomTool(_Closed):
    type: Literal["custom"]
    custom: CustomToolDefinition
    cache_control: CacheControl | None = None


# OpenAI's two kinds of tool. Provider-hosted tools that make the provider (or
# litellm itself) connect somewhere — `mcp` and `url` servers, web fetch — are refused.
Tool = Annotated[
    Annotated[FunctionTool, Tag("FunctionTool")] | Annotated[CustomTool, Tag("CustomTool")],
    _by_type(function="FunctionTool", custom="CustomTool"),
]


class NamedTool(_Closed):
    name: str


class FunctionChoice(_Closed):
    type: Literal["function"]
    function: NamedTool


class CustomChoice(_Closed):
    type: Literal["custom"]
    custom: NamedTool


class AllowedTools(_Closed):
    """OpenAI's `allowed_tools`: the tools named as a `tool_choice` names one (its
    reference shows `{"type": "function", "function": {"name": ...}}`), nothing else: the
    translations read these names."""

    mode: Literal["auto", "required"]
    tools: list[
        Annotated[
            Annotated[FunctionChoice, Tag("FunctionChoice")]
            | Annotated[CustomChoice, Tag("CustomChoice")],
            _by_type(function="FunctionChoice", custom="CustomChoice"),
        ]
    ]


class AllowedToolsChoice(_Closed):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = Annotated[
    Annotated[FunctionChoice, Tag("FunctionChoice")]
    | Annotated[CustomChoice, Tag("CustomChoice")]
    | Annotated[AllowedToolsChoice, Tag("AllowedToolsChoice")],
    _by_type(function="FunctionChoice", custom="CustomChoice", allowed_tools="AllowedToolsChoice"),
]


class ResponseFormat(_Closed):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class StreamOptions(_Closed):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ChatCompletionRequest(_Closed):
    """Every field of `CHAT_PARAMETERS`, no other (a test holds the two equal)."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1, max_length=10_000)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=MAX_N)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = Field(default=None, max_length=512)
    safety_identifier: str | None = Field(default=None, max_length=512)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    store: bool | None = None
    service_tier: str | None = Field(default=None, max_length=64)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = Field(default=None, max_length=128)
    function_call: Literal["none", "auto"] | NamedTool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = Field(default=None, max_length=64)
    verbosity: str | None = Field(default=None, max_length=64)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    prompt_cache_key: str | None = Field(default=None, max_length=1024)
    prompt_cache_retention: str | None = Field(default=None, max_length=64)
    prompt_cache_options: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    moderation: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_bounded(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value


class EmbeddingRequest(_Closed):
    """Every field of `EMBEDDING_PARAMETERS`, no other."""

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
