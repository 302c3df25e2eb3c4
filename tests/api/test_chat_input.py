"""Bad input over plain HTTP: every malformed request gets a 4xx in OpenAI's error shape
(never a 500) and nothing reaches the provider; plus the model list and usage report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.app import AppFactory, settle
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat

EMBEDDINGS = "/api/v1/embeddings"
JSON_HEADERS = {"Content-Type": "application/json"}
PUBLIC_GROUPS = ["primary", "backup", "solo", "claude", "embed"]


def assert_error(
    response: httpx.Response,
    status: int,
    *,
    code: str | None = None,
    param: str | None = None,
    error_type: str = "invalid_request_error",
) -> dict[str, Any]:
    """A JSON error in OpenAI's shape with the given status; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    error: dict[str, Any] = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}, payload
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == error_type
    assert payload["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def assert_not_forwarded(upstream: FakeUpstream, response: httpx.Response) -> None:
    """Nothing reached the provider. (The fake does not count bodies it cannot parse, so a
    provider-side rejection, code `upstream_rejected`, is checked for as well.)"""
    assert upstream.total_calls == 0
    assert response.json()["error"]["code"] != "upstream_rejected"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "primary", "messages": "hello"}, "messages"),
        (chat(temperature="hot"), "temperature"),
        (chat(n=0), "n"),
        (chat(n=10**9), "n"),
        (chat(max_tokens=-1), "max_tokens"),
        (chat(max_completion_tokens=0), "max_completion_tokens"),
        ({"model": "primary", "messages": [{"role": "user", "content": 42}]}, None),
        ({"model": "primary", "messages": [{"role": "wizard", "content": "hi"}]}, None),
        ({"model": "primary", "messages": [{"content": "no role"}]}, "messages.0.role"),
        ({"model": "primary", "messages": []}, "messages"),
        ({"model": "primary", "messages": ["hi"]}, "messages.0"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "", "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": 7, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
        (chat(stream_options="yes", stream=True), "stream_options"),
        (chat(user="u" * 513), "user"),
    ],
    ids=[
        "messages-string",
        "temperature-string",
        "n-zero",
        "n-huge",
        "max_tokens-negative",
        "max_completion_tokens-zero",
        "content-integer",
        "unknown-role",
        "missing-role",
        "empty-messages",
        "message-not-object",
        "missing-model",
        "empty-model",
        "model-integer",
        "five-stop-sequences",
        "stream_options-string",
        "user-too-long",
    ],
)
async def test_invalid_chat_body_is_422_and_not_forwarded(
    llm_app: LLMApp, upstream: FakeUpstream, body: dict[str, Any], param: str | None
) -> None:
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=body)
        error = assert_error(response, 422, code="validation_error")
        if param is not None:
            assert error["param"] == param
        else:  # nested errors name the message they are in
            assert error["param"].startswith("messages.0")
        assert_not_forwarded(upstream, response)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "primary", "messages": [{"role": "user", "content": "\xff\xfe bad"}]}',
        b'[{"model": "primary"}]',
        b'"just a string"',
        b"",
        b'{"model": "primary", "messages": [',
        b'{"model": "primary", "temperature": NaN, "messages": []}',
        b'{"model": "primary", "messages": [{"role": "user", "content": "\\ud800"}]}',
        nested(10_000),
        b'{"model": "primary", "messages": [{"role": "user", "content": "x"}], "tools": '
        + nested(10_000)
        + b"}",
    ],
    ids=[
        "invalid-utf8",
        "json-array",
        "json-string",
        "empty-body",
        "truncated-json",
        "nan",
        "lone-surrogate",
        "nested-10000-lists",
        "nested-10000-inside-object",
    ],
)
async def test_unparseable_body_is_400_and_not_forwarded(
    llm_app: LLMApp, upstream: FakeUpstream, raw: bytes
) -> None:
    async with llm_app() as (_, client):
        response = await client.post(CHAT, content=raw, headers=JSON_HEADERS)
        assert_error(response, 400, code="invalid_json", param=None)
        assert_not_forwarded(upstream, response)
        embeddings = await client.post(EMBEDDINGS, content=raw, headers=JSON_HEADERS)
        assert_error(embeddings, 400, code="invalid_json")
        assert_not_forwarded(upstream, embeddings)


@pytest.mark.parametrize("depth", [100, 300, 1000])
async def test_deeply_nested_field_is_refused_not_a_500(
    llm_app: LLMApp, upstream: FakeUpstream, depth: int
) -> None:
    """Depths orjson can parse (up to 1024) but not serialise again (255) once crashed the
    cache key with a 500."""
    raw = (
        b'{"model": "primary", "messages": [{"role": "user", "content": "x"}], "metadata": '
        + nested(depth)
        + b"}"
    )
    async with llm_app() as (_, client):
        response = await client.post(CHAT, content=raw, headers=JSON_HEADERS)
        assert_error(response, 400, code="invalid_json")
        assert_not_forwarded(upstream, response)


async def test_realistic_nested_schema_is_forwarded_intact(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for level in range(10):
        schema = {"type": "object", "properties": {f"level{level}": schema}}
    response_format = {"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}}
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat("deep", response_format=response_format))
        assert response.status_code == 200, response.text
        sent = upstream.last_request("primary-1")
        assert sent is not None and sent["body"]["response_format"] == response_format


async def test_5mb_field_over_a_1mb_limit_is_413(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    huge = "a" * (5 * 1024 * 1024)
    async with llm_app(max_request_body_bytes=1024 * 1024) as (_, client):
        declared = await client.post(CHAT, json=chat(huge))
        assert_error(declared, 413, code="request_too_large")

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"model": "primary", "messages": [{"role": "user", "content": "'
            for _ in range(5):
                yield b"a" * (1024 * 1024)
            yield b'"}]}'

        streamed = await client.post(CHAT, content=chunked(), headers=JSON_HEADERS)
        assert_error(streamed, 413, code="request_too_large")
        assert_not_forwarded(upstream, streamed)
        # just under the limit still works
        fits = await client.post(CHAT, json=chat("b" * (1024 * 1024 - 200)))
        assert fits.status_code == 200
        assert upstream.total_calls == 1


@pytest.mark.parametrize(
    "field",
    [
        "api_base",
        "base_url",
        "api_key",
        "extra_headers",
        "custom_llm_provider",
        "extra_body",
        "mock_response",
        "aws_secret_access_key",
        "fallbacks",
    ],
)
async def test_provider_settings_are_refused(
    llm_app: LLMApp, upstream: FakeUpstream, field: str
) -> None:
    value: Any = {"x": "y"} if field in ("extra_headers", "extra_body") else "http://evil.test"
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat(**{field: value}))
        error = assert_error(response, 400, code="forbidden_parameter", param=field)
        assert error["message"] == f"Unrecognized request argument supplied: {field}"
        assert_not_forwarded(upstream, response)
        embeddings = await client.post(
            EMBEDDINGS, json={"model": "embed", "input": "x", field: value}
        )
        assert_error(embeddings, 400, code="forbidden_parameter", param=field)
        # refused even on an otherwise invalid body, and even when streaming
        streamed = await client.post(CHAT, json=chat(stream=True, n=0, **{field: value}))
        assert_error(streamed, 400, code="forbidden_parameter", param=field)
        assert upstream.total_calls == 0


async def test_several_forbidden_fields_name_one_and_list_all(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    async with llm_app() as (_, client):
        response = await client.post(
            CHAT, json=chat(api_key="sk-x", api_base="http://evil", timeout=1)
        )
        error = assert_error(response, 400, code="forbidden_parameter", param="api_base")
        for field in ("api_base", "api_key", "timeout"):
            assert field in error["message"]
        assert upstream.total_calls == 0


async def test_unknown_model_is_404(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    async with llm_app() as (_, client):
        for body, path in (
            (chat(model="gpt-404"), CHAT),
            ({"model": "x", "input": "y"}, EMBEDDINGS),
        ):
            response = await client.post(path, json=body)
            error = assert_error(response, 404, code="model_not_found", param="model")
            assert body["model"] in error["message"]
        # a deployment's own model name is not a public name either
        response = await client.post(CHAT, json=chat(model="primary-1"))
        assert_error(response, 404, code="model_not_found")
        assert upstream.total_calls == 0


async def test_invalid_embeddings_body_is_422(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    async with llm_app() as (_, client):
        for body, param in (
            ({"model": "embed", "input": ""}, "input"),
            ({"model": "embed", "input": []}, "input"),
            ({"model": "embed"}, "input"),
            ({"model": "embed", "input": "x", "encoding_format": "hex"}, "encoding_format"),
            ({"model": "embed", "input": "x", "dimensions": 0}, "dimensions"),
            ({"model": "embed", "input": ["x"] * 2049}, "input"),
        ):
            response = await client.post(EMBEDDINGS, json=body)
            error = assert_error(response, 422, code="validation_error")
            assert error["param"].startswith(param), (body, error)
        assert upstream.total_calls == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", "2"),
        ("n", 2.0),
        ("n", True),
        ("temperature", "0.5"),
        ("max_tokens", "5"),
        ("seed", 1.0),
        ("stream", "yes"),
    ],
    ids=[
        "n-string",
        "n-float",
        "n-bool",
        "temperature-string",
        "max_tokens-string",
        "seed-float",
        "stream-string",
    ],
)
async def test_coercible_values_are_refused_not_forwarded(
    llm_app: LLMApp, upstream: FakeUpstream, field: str, value: Any
) -> None:
    """The client's dict is what travels on, so a value that only looks right ("2" for 2)
    must be refused rather than reach the provider as a string (or crash the demo)."""
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat("coerce", model="solo", **{field: value}))
        assert_error(response, 422, code="validation_error", param=field)
        assert_not_forwarded(upstream, response)


@pytest.mark.parametrize("n", [b'"2"', b"2.0"])
async def test_coercible_n_is_not_a_500_on_the_demo(app_factory: AppFactory, n: bytes) -> None:
    raw = b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}], "n": ' + n + b"}"
    async with app_factory() as (_, client):
        response = await client.post(CHAT, content=raw, headers=JSON_HEADERS)
        assert_error(response, 422, code="validation_error", param="n")
        two = await client.post(CHAT, json=chat(model="demo", n=2))
        assert [c["index"] for c in two.json()["choices"]] == [0, 1]


# --------------------------------------------------------------------------- models


async def test_models_lists_exactly_the_public_groups(llm_app: LLMApp) -> None:
    async with llm_app() as (_, client):
        listing = await client.get("/api/v1/models")
        assert listing.status_code == 200
        body = listing.json()
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == PUBLIC_GROUPS
        assert all(m["object"] == "model" and m["owned_by"] == "skygate" for m in body["data"])
        assert (await client.get("/api/v1/models")).json() == body  # stable between calls

        one = await client.get("/api/v1/models/primary")
        assert one.status_code == 200
        assert one.json() == next(m for m in body["data"] if m["id"] == "primary")

        for hidden in ("fast", "primary-1", "demo", "nope"):
            response = await client.get(f"/api/v1/models/{hidden}")
            assert_error(response, 404, code="model_not_found", param="model")


# --------------------------------------------------------------------------- usage


async def test_usage_reports_the_groups_used(llm_app: LLMApp) -> None:
    async with llm_app() as (app, client):
        for text in ("usage one", "usage two"):
            assert (await client.post(CHAT, json=chat(text))).status_code == 200
        streamed = await client.post(CHAT, json=chat("usage stream", model="solo", stream=True))
        assert streamed.status_code == 200 and streamed.content.endswith(b"data: [DONE]\n\n")
        embedded = await client.post(EMBEDDINGS, json={"model": "embed", "input": "usage"})
        assert embedded.status_code == 200
        assert (await client.post(CHAT, json=chat(model="nope"))).status_code == 404
        await settle(app)  # let the stream's accounting finish after [DONE]

        response = await client.get("/api/v1/usage")
        assert response.status_code == 200
        report = response.json()
        assert report["object"] == "usage"
        rows = {row["model"]: row for row in report["data"]}
        assert set(rows) == {"primary", "solo", "embed"}
        assert rows["primary"]["requests"] == 2
        for group in ("primary", "solo"):
            assert rows[group]["prompt_tokens"] > 0 and rows[group]["completion_tokens"] > 0
        assert rows["embed"]["prompt_tokens"] > 0
        assert all(row["tenant"] == "anonymous" for row in report["data"])
        totals = report["totals"]
        assert totals["requests"] == sum(row["requests"] for row in report["data"]) == 4
        assert totals["prompt_tokens"] == sum(row["prompt_tokens"] for row in report["data"])

        today = datetime.now(UTC).date()
        window = await client.get(f"/api/v1/usage?start={today}&end={today}")
        assert {row["model"] for row in window.json()["data"]} == set(rows)
        past = today - timedelta(days=10)
        empty = await client.get(f"/api/v1/usage?start={past}&end={past}")
        assert empty.status_code == 200 and empty.json()["data"] == []


async def test_usage_rejects_bad_windows(app_factory: AppFactory) -> None:
    async with app_factory() as (_, client):
        backwards = await client.get("/api/v1/usage?start=2025-02-02&end=2025-01-01")
        assert_error(backwards, 400, param="start")
        too_long = await client.get("/api/v1/usage?start=2023-01-01&end=2025-01-01")
        assert_error(too_long, 400, param="start")
        garbage = await client.get("/api/v1/usage?start=yesterday")
        assert_error(garbage, 422, code="validation_error", param="start")


async def test_method_and_path_errors_keep_the_shape(app_factory: AppFactory) -> None:
    async with app_factory() as (_, client):
        assert_error(await client.get(CHAT), 405, code="method_not_allowed")
        assert_error(await client.post("/api/v1/chat/complete", json=chat()), 404)
        sent = orjson.dumps(chat(model="demo"))
        ok = await client.post(CHAT, content=sent, headers={"Content-Type": "text/plain"})
        assert ok.status_code == 200  # the body is JSON whatever the content type claims
