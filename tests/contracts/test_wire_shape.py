"""One OpenAI wire shape for every path: live answers through the real app, validated
with OpenAI's published schemas (`tests/support/contracts.py`).

Four upstreams stand behind the gateway, all real HTTP servers (`bench.fake_upstream`):
- `primary`: an OpenAI-compatible server speaking OpenAI's format as OpenAI does (the
  direct path passes its bytes through);
- `solo`: one that bends it as some compatible servers do (`sloppy` mode: nulls where the
  schema wants absence, no `refusal`/`logprobs`, usage on the finish chunk);
- `claude`: Anthropic's Messages API, translated natively (`core.llm.anthropic`);
- `claude-litellm`: the same API through litellm's translation (`translation: litellm`).
Whatever answered, the client gets the same shape. Cached answers and replays:
`test_cached_wire_shape.py`; errors: `test_error_shape.py`.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.app import AppFactory
from tests.support.contracts import assert_valid, assert_valid_stream, sse_data, violations
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat

GROUPS = ["primary", "solo", "claude", "claude-litellm"]
IDS = ["direct", "direct-sloppy", "anthropic", "anthropic-litellm"]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(autouse=True)
def sloppy_solo(upstream: FakeUpstream) -> None:
    upstream.set_behaviour("solo-1", "sloppy")


def ask(group: str, text: str, **extra: Any) -> dict[str, Any]:
    return chat(text, model=group, max_tokens=50, **extra)


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def arguments_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        call.get("function", {}).get("arguments", "")
        for c in chunks
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls") or ()
    )


async def completion(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-cache"] == "miss"
    data: dict[str, Any] = response.json()
    assert_valid("CreateChatCompletionResponse", data)
    return data


async def stream(
    client: httpx.AsyncClient, body: dict[str, Any], *, include_usage: bool
) -> list[dict[str, Any]]:
    if include_usage:
        body = {**body, "stream_options": {"include_usage": True}}
    response = await client.post(CHAT, json={**body, "stream": True})
    assert response.status_code == 200, response.text
    assert response.headers["x-cache"] == "miss"
    return assert_valid_stream(response.content, include_usage=include_usage)


# -- chat completions ---------------------------------------------------------------------
async def test_the_sloppy_upstream_really_breaks_the_schema(upstream: FakeUpstream) -> None:
    """What `solo` sends the gateway (so the tests below would catch a gateway that
    passed it on)."""
    body = {"model": "solo-1", "messages": [{"role": "user", "content": "weather?"}]}
    async with httpx.AsyncClient(base_url=upstream.base_url) as raw:
        answer = (await raw.post("/chat/completions", json=body)).json()
        assert violations("CreateChatCompletionResponse", answer)
        streamed = await raw.post(
            "/chat/completions",
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        )
    chunks = [orjson.loads(d) for d in sse_data(streamed.content)[:-1]]
    assert all(violations("CreateChatCompletionStreamResponse", c) for c in chunks)
    assert chunks[-1]["choices"] and chunks[-1]["usage"], "usage not on the finish chunk"


@pytest.mark.parametrize("group", GROUPS, ids=IDS)
async def test_answers_have_openais_shape(llm_app: LLMApp, group: str) -> None:
    async with llm_app(litellm=True) as (_, client):
        data = await completion(client, ask(group, "shape of a plain answer"))
        message = data["choices"][0]["message"]
        assert message["content"] == "echo: shape of a plain answer"
        assert "tool_calls" not in message  # absent, not null, when there are none
        assert data["usage"]["total_tokens"] == (
            data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
        )


@pytest.mark.parametrize("include_usage", [False, True], ids=["no-usage", "include-usage"])
@pytest.mark.parametrize("group", GROUPS, ids=IDS)
async def test_streams_have_openais_shape(llm_app: LLMApp, group: str, include_usage: bool) -> None:
    """With `include_usage` the usage is a last chunk of its own with `choices: []`,
    also from the upstream that sends it on its finish chunk; without it, none."""
    text = f"shape of a stream, usage {include_usage}"
    async with llm_app(litellm=True) as (_, client):
        chunks = await stream(client, ask(group, text), include_usage=include_usage)
        assert text_of(chunks) == f"echo: {text}"
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
        if include_usage:
            assert chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("group", GROUPS, ids=IDS)
async def test_tool_calls_have_openais_shape_and_go_back_as_sent(
    llm_app: LLMApp, upstream: FakeUpstream, group: str
) -> None:
    """A tool call, streamed or not, and the follow-up turn that sends the assistant
    message back exactly as it arrived (a strict client does no clean-up)."""
    async with llm_app(litellm=True) as (_, client):
        data = await completion(client, ask(group, "weather in Paris?", tools=[WEATHER]))
        choice = data["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        (call,) = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}

        follow_up = ask(
            group,
            "weather in Paris?",
            tools=[WEATHER],
            messages=[
                {"role": "user", "content": "weather in Paris?"},
                choice["message"],
                {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
            ],
        )
        await completion(client, follow_up)  # accepted, translated, answered in shape

        chunks = await stream(
            client, ask(group, "weather in Paris now?", tools=[WEATHER]), include_usage=True
        )
        assert orjson.loads(arguments_of(chunks)) == {"city": "Paris"}
        opened = [
            call
            for c in chunks
            if c["choices"]
            for call in c["choices"][0]["delta"].get("tool_calls") or ()
            if "id" in call
        ]
        assert [(c["id"], c["function"]["name"]) for c in opened] == [(call["id"], "get_weather")]
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == (
            "tool_calls"
        )


async def test_the_sdk_reads_every_path_alike(llm_app: LLMApp) -> None:
    """The official SDK parses each path's answers into the same typed objects."""
    async with llm_app(litellm=True) as (app, _):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport) as http,
            openai.AsyncOpenAI(
                api_key="sk-test", base_url="http://skygate.test/api/v1", http_client=http
            ) as sdk,
        ):
            for group in GROUPS:
                answer = await sdk.chat.completions.create(
                    model=group, max_tokens=50, messages=[{"role": "user", "content": "sdk hi"}]
                )
                assert answer.choices[0].message.content == "echo: sdk hi"
                assert answer.choices[0].message.refusal is None
                events = await sdk.chat.completions.create(
                    model=group,
                    max_tokens=50,
                    messages=[{"role": "user", "content": "sdk stream"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
                chunks = [chunk async for chunk in events]
                assert chunks[-1].choices == [] and chunks[-1].usage is not None
                assert all(c.usage is None for c in chunks[:-1]), group


# -- the demo model ------------------------------------------------------------------------
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}


async def test_demo_model_has_openais_shape(app_factory: AppFactory) -> None:
    async with app_factory() as (_, client):
        data = await completion(client, chat("demo shape", model="demo"))
        assert "demo shape" in data["choices"][0]["message"]["content"]
        for include_usage in (False, True):
            chunks = await stream(
                client,
                chat(f"demo stream {include_usage}", model="demo"),
                include_usage=include_usage,
            )
            assert f"demo stream {include_usage}" in text_of(chunks)
        called = await completion(client, chat("what is 6*7?", model="demo", tools=[CALCULATOR]))
        assert called["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "calculator"
        chunks = await stream(
            client, chat("what is 7*8?", model="demo", tools=[CALCULATOR]), include_usage=True
        )
        assert "7*8" in arguments_of(chunks)

        embeddings = await client.post(
            "/api/v1/embeddings",
            json={"model": "demo", "input": ["a", "b"], "encoding_format": "float"},
        )
        assert_valid("CreateEmbeddingResponse", embeddings.json())


# -- embeddings and models -----------------------------------------------------------------
async def test_embeddings_have_openais_shape(llm_app: LLMApp) -> None:
    """Floats only: OpenAI's own base64 answers hold a string where its schema has an
    array, so that format is outside the schema wherever it comes from."""
    async with llm_app(litellm=True) as (_, client):
        for body in (
            {"model": "embed", "input": "one"},
            {"model": "embed", "input": ["one", "two"], "encoding_format": "float"},
        ):
            response = await client.post("/api/v1/embeddings", json=body)
            assert response.status_code == 200, response.text
            assert_valid("CreateEmbeddingResponse", response.json())


async def test_models_have_openais_shape(llm_app: LLMApp, app_factory: AppFactory) -> None:
    async with llm_app(litellm=True) as (_, client):
        listed = (await client.get("/api/v1/models")).json()
        assert_valid("ListModelsResponse", listed)
        assert {m["id"] for m in listed["data"]} >= {"primary", "claude", "embed"}
        for model in listed["data"]:
            one = await client.get(f"/api/v1/models/{model['id']}")
            assert one.json() == model
            assert_valid("Model", one.json())
    async with app_factory() as (_, client):
        listed = (await client.get("/api/v1/models")).json()
        assert_valid("ListModelsResponse", listed)
        assert_valid("Model", (await client.get("/api/v1/models/demo")).json())
