"""The official `openai` SDK against the gateway, in process: the offline demo model,
the fake upstream (parameters, tools, embeddings, streaming) and the mapping of every
gateway error to the SDK exception a client would catch."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from openai.types.chat import ChatCompletionFunctionToolParam
from openai.types.shared_params import ResponseFormatJSONSchema

from bench.fake_upstream import FakeUpstream
from tests.support.app import AppFactory
from tests.support.llm import LLMApp

BASE_URL = "http://skygate.test/api/v1"
CLIENT_KEY = "sk-client-secret-never-forwarded"
ERROR_KEYS = {"message", "type", "param", "code"}
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@asynccontextmanager
async def sdk(
    app: FastAPI, *, api_key: str = CLIENT_KEY, max_retries: int = 0
) -> AsyncIterator[openai.AsyncOpenAI]:
    """An AsyncOpenAI client whose HTTP goes straight into `app` (lifespan already running)."""
    http_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    client = openai.AsyncOpenAI(
        api_key=api_key, base_url=BASE_URL, http_client=http_client, max_retries=max_retries
    )
    try:
        yield client
    finally:
        await client.close()


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def assert_openai_error_shape(exc: openai.APIStatusError, status: int) -> dict[str, Any]:
    """The SDK saw `status` and the body is OpenAI's error object; returns that object."""
    assert exc.status_code == status
    payload = exc.response.json()
    assert set(payload["error"]) == ERROR_KEYS, payload
    # the SDK unwraps {"error": {...}} into .body and reads code/param/type from it
    assert exc.body == payload["error"]
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    assert exc.code == payload["error"]["code"] and exc.type == payload["error"]["type"]
    # the SDK exposes x-request-id; the body carries the same id
    assert exc.request_id and payload.get("request_id") == exc.request_id
    error: dict[str, Any] = payload["error"]
    return error


# --------------------------------------------------------------------------- the demo model


async def test_demo_models_list_is_exactly_demo(app_factory: AppFactory) -> None:
    async with app_factory() as (app, _), sdk(app) as client:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["demo"]
        assert (await client.models.retrieve("demo")).id == "demo"


async def test_demo_chat_non_streaming_and_streaming_agree(app_factory: AppFactory) -> None:
    async with app_factory() as (app, _), sdk(app) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="demo", messages=user("tell me about gateways")
        )
        assert raw.headers["x-skygate-demo"] == "true"
        completion = raw.parse()
        content = completion.choices[0].message.content
        assert content and "tell me about gateways" in content
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
        assert completion.usage.total_tokens == (
            completion.usage.prompt_tokens + completion.usage.completion_tokens
        )

        # no-cache: a freshly generated stream, not a replay of the answer above
        stream = await client.chat.completions.create(
            model="demo",
            messages=user("tell me about gateways"),
            stream=True,
            extra_headers={"Cache-Control": "no-cache"},
        )
        chunks = [chunk async for chunk in stream]
        pieces = [c.choices[0].delta.content for c in chunks if c.choices]
        assert len([p for p in pieces if p]) > 1, "the demo answer arrived in one piece"
        assert "".join(p or "" for p in pieces) == content
        assert all(c.usage is None for c in chunks), "usage sent without include_usage"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


async def test_demo_stream_with_include_usage_ends_with_usage(app_factory: AppFactory) -> None:
    async with app_factory() as (app, _), sdk(app) as client:
        stream = await client.chat.completions.create(
            model="demo",
            messages=user("count my tokens"),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        last = chunks[-1]
        assert last.choices == []
        assert last.usage is not None and last.usage.completion_tokens > 0
        assert last.usage.prompt_tokens > 0
        assert all(c.usage is None for c in chunks[:-1])
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert "count my tokens" in text


async def test_demo_embeddings_through_the_sdk(app_factory: AppFactory) -> None:
    """The SDK asks for base64 unless told otherwise and decodes it to floats; an explicit
    format is handed back as the gateway sent it."""
    async with app_factory() as (app, _), sdk(app) as client:
        default = await client.embeddings.create(model="demo", input=["alpha", "beta"])
        assert [item.index for item in default.data] == [0, 1]
        vectors = [item.embedding for item in default.data]
        assert all(len(v) == 16 and all(-1.0 <= x <= 1.0 for x in v) for v in vectors)
        assert vectors[0] != vectors[1]
        assert default.usage.prompt_tokens > 0

        floats = await client.embeddings.create(
            model="demo", input=["alpha", "beta"], encoding_format="float"
        )
        for decoded, plain in zip(vectors, floats.data, strict=True):
            assert decoded == pytest.approx(plain.embedding, abs=1e-6)

        explicit = await client.embeddings.create(
            model="demo", input="alpha", encoding_format="base64"
        )
        encoded = explicit.data[0].embedding
        assert isinstance(encoded, str), "asked for base64, got something else"
        unpacked = struct.unpack("<16f", base64.b64decode(encoded))
        assert list(unpacked) == pytest.approx(floats.data[0].embedding, abs=1e-6)


# --------------------------------------------------------------------------- the fake upstream


async def test_chat_streaming_and_alias_against_the_upstream(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app() as (app, _), sdk(app) as client:
        completion = await client.chat.completions.create(
            model="primary", messages=user("hello there")
        )
        assert completion.choices[0].message.content == "echo: hello there"
        assert completion.model == "primary-1"
        assert completion.usage is not None and completion.usage.prompt_tokens > 0

        stream = await client.chat.completions.create(
            model="primary",
            messages=user("stream me please"),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "echo: stream me please"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None

        via_alias = await client.chat.completions.create(model="fast", messages=user("alias"))
        assert via_alias.choices[0].message.content == "echo: alias"
        assert upstream.calls("primary-1") == 3

        sent = upstream.last_request("primary-1")
        assert sent is not None
        assert CLIENT_KEY not in json.dumps(sent["headers"]), "client key forwarded upstream"


async def test_sampling_parameters_are_forwarded(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    schema: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {"type": "object", "properties": {"text": {"type": "string"}}},
        },
    }
    async with llm_app() as (app, _), sdk(app) as client:
        completion = await client.chat.completions.create(
            model="solo",
            messages=user("many params"),
            response_format=schema,
            seed=42,
            n=2,
            stop=["\n\n", "END"],
            max_completion_tokens=64,
            user="end-user-7",
            temperature=0.3,
        )
        assert [c.index for c in completion.choices] == [0, 1]
        assert all(c.message.content == "echo: many params" for c in completion.choices)
        sent = upstream.last_request("solo-1")
        assert sent is not None
        body = sent["body"]
        assert body["model"] == "solo-1"
        assert body["response_format"] == schema
        assert body["seed"] == 42 and body["n"] == 2
        assert body["stop"] == ["\n\n", "END"]
        assert body["max_completion_tokens"] == 64
        assert body["user"] == "end-user-7" and body["temperature"] == 0.3

        json_mode = await client.chat.completions.create(
            model="solo",
            messages=user("json please"),
            response_format={"type": "json_object"},
            stop="STOP",
        )
        assert json_mode.choices[0].message.content == "echo: json please"
        sent = upstream.last_request("solo-1")
        assert sent is not None
        assert sent["body"]["response_format"] == {"type": "json_object"}
        assert sent["body"]["stop"] == "STOP"


async def test_tool_calls_round_trip(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    async with llm_app() as (app, _), sdk(app) as client:
        completion = await client.chat.completions.create(
            model="primary",
            messages=user("What is the weather in Paris?"),
            tools=[WEATHER_TOOL],
            tool_choice="auto",
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        call = choice.message.tool_calls[0]
        assert call.type == "function"
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        sent = upstream.last_request("primary-1")
        assert sent is not None
        assert sent["body"]["tools"] == [WEATHER_TOOL] and sent["body"]["tool_choice"] == "auto"

        # the tool's answer goes back in a follow-up turn
        follow_up = await client.chat.completions.create(
            model="primary",
            messages=[
                {"role": "user", "content": "What is the weather in Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [call.model_dump()],  # type: ignore[list-item]
                },
                {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
                {"role": "user", "content": "thanks"},
            ],
            tools=[WEATHER_TOOL],
        )
        assert follow_up.choices[0].message.content == "echo: thanks"

        stream = await client.chat.completions.create(
            model="primary",
            messages=user("weather in Paris, streamed"),
            tools=[WEATHER_TOOL],
            stream=True,
        )
        arguments = ""
        names = []
        async for chunk in stream:
            for delta_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                if delta_call.function and delta_call.function.name:
                    names.append(delta_call.function.name)
                if delta_call.function and delta_call.function.arguments:
                    arguments += delta_call.function.arguments
        assert names == ["get_weather"]
        assert json.loads(arguments) == {"city": "Paris"}


async def test_embeddings_base64_default_is_decoded_by_the_sdk(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app() as (app, _), sdk(app) as client:
        default = await client.embeddings.create(model="embed", input=["one", "two"])
        sent = upstream.last_request("embed-1")
        assert sent is not None
        assert sent["body"]["encoding_format"] == "base64"  # forwarded as the SDK asked
        assert sent["body"]["model"] == "embed-1"
        floats = await client.embeddings.create(
            model="embed", input=["one", "two"], encoding_format="float"
        )
        assert len(default.data) == 2 and len(floats.data) == 2
        for decoded, plain in zip(default.data, floats.data, strict=True):
            assert isinstance(decoded.embedding, list) and len(decoded.embedding) == 8
            assert decoded.embedding == pytest.approx(plain.embedding, abs=1e-6)
        assert floats.usage.prompt_tokens > 0
        assert upstream.calls("embed-1") == 2


# --------------------------------------------------------------------------- errors


async def test_forbidden_field_is_bad_request_and_never_sent(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app() as (app, _), sdk(app) as client:
        before = upstream.total_calls
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="primary",
                messages=user("redirect me"),
                extra_body={"api_base": "http://evil"},
            )
        error = assert_openai_error_shape(caught.value, 400)
        assert error["param"] == "api_base" and error["code"] == "forbidden_parameter"
        assert upstream.total_calls == before


async def test_wrong_api_key_is_authentication_error(app_factory: AppFactory) -> None:
    key = "k" * 32
    async with app_factory(admin_api_key=key) as (app, _):
        async with sdk(app, api_key="wrong-" + key) as client:
            with pytest.raises(openai.AuthenticationError) as caught:
                await client.chat.completions.create(model="demo", messages=user("hi"))
            error = assert_openai_error_shape(caught.value, 401)
            assert error["type"] == "authentication_error"
            assert caught.value.response.headers["www-authenticate"] == "Bearer"
            with pytest.raises(openai.AuthenticationError):
                await client.models.list()
        async with sdk(app, api_key=key) as client:
            answer = await client.chat.completions.create(model="demo", messages=user("hi"))
            assert answer.choices[0].message.content


async def test_model_outside_the_keys_allow_list_is_permission_denied(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    admin = "admin-key-for-sdk-tests-0123456789abcdef"
    async with llm_app(admin_api_key=admin) as (app, http):
        created = await http.post(
            "/api/v1/keys",
            headers={"Authorization": f"Bearer {admin}"},
            json={"name": "sdk", "tenant": "t", "allowed_models": ["backup"]},
        )
        async with sdk(app, api_key=created.json()["key"]) as client:
            with pytest.raises(openai.PermissionDeniedError) as info:
                await client.chat.completions.create(model="primary", messages=user("no"))
            error = assert_openai_error_shape(info.value, 403)
            assert error["code"] == "model_not_allowed"
            answer = await client.chat.completions.create(model="backup", messages=user("yes"))
            assert answer.choices[0].message.content
    assert upstream.calls("primary-1") == 0


async def test_unknown_model_is_not_found(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    async with llm_app() as (app, _), sdk(app) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="gpt-nope", messages=user("hi"))
        error = assert_openai_error_shape(caught.value, 404)
        assert error["code"] == "model_not_found" and error["param"] == "model"
        with pytest.raises(openai.NotFoundError) as caught:
            await client.embeddings.create(model="gpt-nope", input="x")
        assert caught.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError) as caught:
            await client.models.retrieve("fast")  # an alias, not a public name
        assert caught.value.code == "model_not_found"
        assert upstream.total_calls == 0


async def test_oversized_body_is_413(app_factory: AppFactory) -> None:
    async with app_factory(max_request_body_bytes=1024) as (app, _), sdk(app) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="demo", messages=user("x" * 4096))
        error = assert_openai_error_shape(caught.value, 413)
        assert error["code"] == "request_too_large"
        assert type(caught.value) is openai.APIStatusError  # the SDK has no 413 subclass


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 1000}, "n"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ({"temperature": 5}, "temperature"),
    ],
    ids=["n-1000", "unknown-role", "temperature-5"],
)
async def test_invalid_values_are_unprocessable(
    llm_app: LLMApp, upstream: FakeUpstream, extra: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"model": "primary", "messages": user("hi"), **extra}
    async with llm_app() as (app, _), sdk(app) as client:
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            await client.chat.completions.create(**request)
        error = assert_openai_error_shape(caught.value, 422)
        assert error["param"] == param and error["code"] == "validation_error"
        assert upstream.total_calls == 0


async def test_upstream_rate_limit_is_rate_limit_error(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour("solo-1", "status", status=429, retry_after=30)
    async with llm_app() as (app, _), sdk(app) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="solo", messages=user("limited"))
        error = assert_openai_error_shape(caught.value, 429)
        assert error["type"] == "rate_limit_error"
        assert caught.value.response.headers["retry-after"] == "30"
        # a stream that fails before its first byte raises at create(), with the real status
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="solo", messages=user("limited stream"), stream=True
            )


async def test_upstream_timeout_is_a_504(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    upstream.set_behaviour("solo-1", "hang")
    async with llm_app(timeout=0.3, attempts=0) as (app, _), sdk(app) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="solo", messages=user("hang"))
        error = assert_openai_error_shape(caught.value, 504)
        assert error["type"] == "timeout_error"


async def test_upstream_failure_is_a_502_and_a_lone_deployment_stays_in_service(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour("solo-1", "status", status=500)
    async with (
        llm_app(attempts=0, cooldown_failures=1, cooldown_seconds=30) as (app, _),
        sdk(app) as client,
    ):
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="solo", messages=user("broken"))
        error = assert_openai_error_shape(caught.value, 502)
        assert error["type"] == "upstream_error"
        # past the breaker's threshold, but the group's only deployment: still reached
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(model="solo", messages=user("broken again"))
        error = assert_openai_error_shape(caught.value, 502)
        assert error["type"] == "upstream_error"
        assert upstream.calls("solo-1") == 2
        upstream.set_behaviour("solo-1", "ok")
        answer = await client.chat.completions.create(model="solo", messages=user("healed"))
        assert answer.choices[0].message.content


async def test_stream_cut_midway_raises_in_the_sdk(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    upstream.set_behaviour("solo-1", "cut", after_chunks=2)
    async with llm_app() as (app, _), sdk(app) as client:
        stream = await client.chat.completions.create(
            model="solo", messages=user("this answer will be cut short"), stream=True
        )
        received: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                if chunk.choices:
                    received.append(chunk.choices[0].delta.content or "")
        assert not isinstance(caught.value, openai.APIStatusError)  # headers were already 200
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["code"] == "stream_interrupted"
        assert "".join(received) != "echo: this answer will be cut short"
