"""Tools through the real gateway on every provider: a tool call (streamed and not),
parallel calls, `tool_choice`, and the follow-up turn carrying the results, each against
a fake upstream speaking that provider's own wire format (`tests.support.providers`).

Every answer is checked against OpenAI's published schema, and every request the
provider received is checked in the provider's own format: Anthropic's `tool_choice`
and `tool_result` blocks, Gemini's `functionCallingConfig` and `functionResponse`
parts, Cohere's `tool_choice` and `tool` messages. `openai` (the direct path) is the
parity case: the gateway forwards its tools as sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.app import make_settings, running_app
from tests.support.contracts import assert_valid, assert_valid_stream
from tests.support.providers import NATIVE, Native, provider_router_yaml, set_keys
from tests.support.requests import CHAT

PROVIDERS = ["anthropic", "gemini", "cohere", "openai"]


# What fails today for reasons outside Skygate (a translation it does not own), as
# (test, provider, mode): reason. Each case runs in full and is expected to fail
# (strict: a fix turns it into a failure to remove here). Cohere's five, litellm's
# broken v2 translation, went with the native path (`core.llm.cohere`).
KNOWN_GAPS: dict[tuple[str, ...], str] = {}


def cases(test: str, *, streamed: bool) -> list[Any]:
    """The parameters, (provider,) or (provider, streamed), with the known gaps marked."""
    params = []
    for provider in PROVIDERS:
        for mode in ("complete", "stream") if streamed else ("complete",):
            reason = KNOWN_GAPS.get((test, provider, mode))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            values = (provider, mode == "stream") if streamed else (provider,)
            name = f"{provider}-{mode}" if streamed else provider
            params.append(pytest.param(*values, marks=marks, id=name))
    return params


def _function(name: str, description: str) -> dict[str, Any]:
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


WEATHER = _function("get_weather", "Current weather for a city")
TIME = _function("get_time", "Local time in a city")
BOTH = "Paris: call get_weather and get_time"
RESULTS = {"get_weather": "sunny, 21 C", "get_time": "14:05"}


@pytest.fixture
async def client(
    upstream: FakeUpstream, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    set_keys(monkeypatch)
    router = tmp_path / "router.yaml"
    router.write_text(provider_router_yaml(upstream))
    settings = make_settings(
        router_config=str(router),
        database_url=sqlite_url,
        enable_cache=False,  # every request reaches the upstream
        usage_flush_seconds=0.1,
    )
    async with running_app(settings) as (_, http):
        yield http


def ask(native: Native, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": native.group,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


async def complete(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert_valid("CreateChatCompletionResponse", data)
    return data


async def stream(client: httpx.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    response = await client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    chunks = assert_valid_stream(response.content, include_usage=True)
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    return chunks


def calls_of(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (call["function"]["name"], orjson.loads(call["function"]["arguments"]))
        for call in message.get("tool_calls") or ()
    ]


def assembled(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The assistant message a client builds from streamed deltas: tool calls by index
    (id and name in a call's first delta, arguments concatenated), the text, the
    finish reason."""
    calls: dict[int, dict[str, Any]] = {}
    text = ""
    finish = None
    for chunk in chunks:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            text += delta.get("content") or ""
            finish = choice["finish_reason"] or finish
            for piece in delta.get("tool_calls") or ():
                if piece["index"] not in calls:
                    assert piece.get("id") and piece["function"].get("name"), piece
                    calls[piece["index"]] = {
                        "id": piece["id"],
                        "type": "function",
                        "function": {"name": piece["function"]["name"], "arguments": ""},
                    }
                call = calls[piece["index"]]
                call["function"]["arguments"] += piece["function"].get("arguments") or ""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {"message": message, "finish_reason": finish}


def sent(upstream: FakeUpstream, native: Native) -> dict[str, Any]:
    request = upstream.last_request(native.model)
    assert request is not None, f"nothing reached {native.group}"
    assert request["path"].split("?")[0].startswith(native.path.split(":")[0])
    body: dict[str, Any] = request["body"]
    return body


def script_parallel(upstream: FakeUpstream, native: Native) -> None:
    """The OpenAI fake calls one tool unless scripted: script what a model would do."""
    if native.group == "openai":
        calls = [{"name": name, "arguments": {"city": "Paris"}} for name in RESULTS]
        answer = "tool results: " + "; ".join(RESULTS.values())
        upstream.set_behaviour(
            "gpt-fake", "script", turns=[{"tool_calls": calls}, {"content": answer}]
        )


# -- one call -------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", cases("one-call", streamed=False))
async def test_a_tool_call(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
) -> None:
    native = NATIVE[provider]
    data = await complete(client, ask(native, "weather in Paris?", tools=[WEATHER]))
    choice = data["choices"][0]
    assert calls_of(choice["message"]) == [("get_weather", {"city": "Paris"})]
    assert choice["message"]["tool_calls"][0]["id"]
    assert choice["finish_reason"] == "tool_calls"
    assert native.functions(sent(upstream, native)) == ["get_weather"]


@pytest.mark.parametrize("provider", cases("one-streamed-call", streamed=False))
async def test_a_streamed_tool_call(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
) -> None:
    native = NATIVE[provider]
    answer = assembled(await stream(client, ask(native, "weather in Paris?", tools=[WEATHER])))
    assert calls_of(answer["message"]) == [("get_weather", {"city": "Paris"})]
    assert answer["finish_reason"] == "tool_calls"
    assert native.functions(sent(upstream, native)) == ["get_weather"]


# -- parallel calls -------------------------------------------------------------------------
@pytest.mark.parametrize(("provider", "streamed"), cases("parallel", streamed=True))
async def test_parallel_tool_calls(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str, streamed: bool
) -> None:
    native = NATIVE[provider]
    script_parallel(upstream, native)
    body = ask(native, BOTH, tools=[WEATHER, TIME])
    answer = (
        assembled(await stream(client, body))
        if streamed
        else (await complete(client, body))["choices"][0]
    )
    assert calls_of(answer["message"]) == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"city": "Paris"}),
    ]
    ids = [call["id"] for call in answer["message"]["tool_calls"]]
    assert len(set(ids)) == 2
    assert answer["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
async def test_parallel_calls_switched_off(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
) -> None:
    """`parallel_tool_calls: false` reaches the providers that have it (Anthropic's
    `disable_parallel_tool_use`); Gemini and Cohere have no such setting."""
    native = NATIVE[provider]
    body = ask(native, BOTH, tools=[WEATHER, TIME], parallel_tool_calls=False)
    data = await complete(client, body)
    request = sent(upstream, native)
    if provider == "anthropic":
        assert request["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
        assert len(data["choices"][0]["message"]["tool_calls"]) == 1
    else:
        assert request["parallel_tool_calls"] is False


# -- tool_choice ----------------------------------------------------------------------------
CHOICES: dict[str, Any] = {
    "required": "required",
    "named": {"type": "function", "function": {"name": "get_time"}},
    "none": "none",
}
NATIVE_CHOICES: dict[str, dict[str, Any]] = {
    "anthropic": {
        "required": {"type": "any"},
        "named": {"type": "tool", "name": "get_time"},
        "none": {"type": "none"},
    },
    "gemini": {
        "required": {"mode": "ANY"},
        "named": {"mode": "ANY", "allowed_function_names": ["get_time"]},
        "none": {"mode": "NONE"},
    },
    "cohere": {"required": "REQUIRED", "named": "REQUIRED", "none": "NONE"},
    "openai": CHOICES,
}


@pytest.mark.parametrize("choice", list(CHOICES))
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_choice_reaches_the_provider_in_its_form(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str, choice: str
) -> None:
    """`required` forces a call on a prompt that asks for none, a named function is the
    one called, `none` gets text although the prompt asks for the weather."""
    native = NATIVE[provider]
    text = "weather in Paris?" if choice == "none" else "hello there"
    data = await complete(
        client, ask(native, text, tools=[WEATHER, TIME], tool_choice=CHOICES[choice])
    )
    request = sent(upstream, native)
    assert native.tool_choice(request) == NATIVE_CHOICES[provider][choice]
    # Cohere has no named choice: the gateway offers it only the named function.
    offered = (
        ["get_time"] if (provider, choice) == ("cohere", "named") else ["get_weather", "get_time"]
    )
    assert native.functions(request) == offered
    if not native.translated:
        return  # the OpenAI fake does not act on tool_choice; forwarding is the point
    message = data["choices"][0]["message"]
    expected = {"required": ["get_weather"], "named": ["get_time"], "none": []}[choice]
    assert [name for name, _ in calls_of(message)] == expected
    if choice == "none":
        assert message["content"] == f"echo: {text}"


# -- the follow-up turn ---------------------------------------------------------------------
@pytest.mark.parametrize(("provider", "streamed"), cases("follow-up", streamed=True))
async def test_the_follow_up_carries_the_tool_results(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str, streamed: bool
) -> None:
    """The client sends the assistant message back as it received it (streamed: as it
    assembled it) with one result per call; the provider gets them in its own form and
    answers from them."""
    native = NATIVE[provider]
    script_parallel(upstream, native)
    first = ask(native, BOTH, tools=[WEATHER, TIME])
    if streamed:
        message = assembled(await stream(client, first))["message"]
    else:
        message = (await complete(client, first))["choices"][0]["message"]
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": RESULTS[call["function"]["name"]]}
        for call in message.get("tool_calls") or ()
    ]
    assert len(results) == 2
    follow_up = {**first, "messages": [*first["messages"], message, *results]}
    if streamed:
        answer = assembled(await stream(client, follow_up))
    else:
        answer = (await complete(client, follow_up))["choices"][0]
    assert answer["message"]["content"] == "tool results: sunny, 21 C; 14:05"
    assert answer["finish_reason"] == "stop"

    received = native.tool_results(sent(upstream, native))
    if provider == "gemini":  # Gemini pairs results with calls by name and order
        keys = [call["function"]["name"] for call in message["tool_calls"]]
    else:
        keys = [call["id"] for call in message["tool_calls"]]
    assert received == list(zip(keys, RESULTS.values(), strict=True))


# -- embeddings -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("group", "model", "path"),
    [
        (
            "gemini-embed",
            "text-embedding-004",
            "/v1beta/models/text-embedding-004:batchEmbedContents",
        ),
        ("cohere-embed", "embed-english-v3.0", "/v2/embed"),
        ("openai-embed", "embed-fake", "/v1/embeddings"),
    ],
)
async def test_embeddings(
    client: httpx.AsyncClient, upstream: FakeUpstream, group: str, model: str, path: str
) -> None:
    response = await client.post("/api/v1/embeddings", json={"model": group, "input": ["a b", "c"]})
    assert response.status_code == 200, response.text
    data = response.json()
    assert_valid("CreateEmbeddingResponse", data)
    assert [item["index"] for item in data["data"]] == [0, 1]
    request = upstream.last_request(model)
    assert request is not None and request["path"] == path
