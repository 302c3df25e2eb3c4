"""`model: "agent:<id>"` through the official OpenAI SDK over real HTTP: a whole
answer and a stream, both valid against OpenAI's schema and metered as the run, and
a request with tools of its own refused.

Every test serves the app with a real uvicorn server (tests/agents/transports/conftest.py):
httpx's ASGI transport buffers a whole response, so it could neither show events
arriving while the run goes on nor a client leaving in the middle of one. The
model is the fake upstream in `script` mode (a real HTTP provider), so each turn's
answer, its pace (`chunk_delay_ms`) and the requests it received are the test's.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from prometheus_client import REGISTRY

from tests.support.agents import MODEL, TWO_TOOL_TURNS, ServedGateway
from tests.support.app import settle
from tests.support.contracts import assert_valid


# -- agent:<id> through the OpenAI SDK -----------------------------------------------------
def sdk(gateway: ServedGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{gateway.url}/api/v1", api_key=gateway.key, max_retries=0, timeout=30
    )


async def test_agent_models_through_the_openai_sdk(gateway: ServedGateway) -> None:
    gateway.upstream.set_behaviour(MODEL, "script", turns=TWO_TOOL_TURNS)
    messages: Any = [{"role": "user", "content": "What is 6*7, plus one?"}]
    async with sdk(gateway) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="agent:scripted", messages=messages
        )
        completion = raw.parse()
        assert_valid("CreateChatCompletionResponse", raw.http_response.json())
        run = await gateway.get_run(raw.headers["x-skygate-run-id"])
        assert run["status"] == "completed" and run["usage"]["llm_calls"] == 3
        assert completion.object == "chat.completion" and completion.model == "agent:scripted"
        assert completion.choices[0].message.content == run["output"]
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == run["usage"]["prompt_tokens"]
        assert completion.usage.completion_tokens == run["usage"]["completion_tokens"]
        assert completion.usage.total_tokens == run["usage"]["total_tokens"]

        stream = await client.chat.completions.with_raw_response.create(
            model="agent:scripted",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream.parse()]
        for chunk in chunks:
            assert_valid("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
        streamed = await gateway.get_run(stream.headers["x-skygate-run-id"])
        assert streamed["id"] != run["id"] and streamed["status"] == "completed"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == streamed["output"] == run["output"]
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
        usage = chunks[-1].usage
        assert not chunks[-1].choices and usage is not None
        assert usage.prompt_tokens == streamed["usage"]["prompt_tokens"]
        assert usage.completion_tokens == streamed["usage"]["completion_tokens"]

        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="agent:scripted",
                messages=messages,
                tools=[{"type": "function", "function": {"name": "mine", "parameters": {}}}],
            )
        assert refused.value.status_code == 400
        assert refused.value.code == "unsupported_parameter"
        assert refused.value.param == "tools"
    assert gateway.upstream.calls(MODEL) == 6  # the refused request reached no provider


def http_count(status: int, error_type: str) -> float:
    labels = {"method": "POST", "route": "/api/v1/chat/completions", "status": str(status)}
    return (
        REGISTRY.get_sample_value("http_requests_total", {**labels, "error_type": error_type})
        or 0.0
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_a_failed_agent_run_is_counted_by_whose_fault_it_is(
    gateway: ServedGateway, stream: bool
) -> None:
    """The provider refusing the gateway's credentials fails the run; the client's
    answer (a 502, or an error event in a stream that began 200) is counted as the
    provider's fault, the same whichever way the answer went."""
    for model in (MODEL, "backup-1"):  # the group and its fallback
        gateway.upstream.set_behaviour(model, "status", status=401)
    status = 200 if stream else 502
    before = http_count(status, "provider_rejected")
    response = await gateway.http.post(
        "/api/v1/chat/completions",
        json={
            "model": "agent:scripted",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": stream,
        },
    )
    assert response.status_code == status, response.text
    if stream:
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        error = json.loads(events[-1])["error"]
        assert "[DONE]" not in events, "a failed run never ends the stream cleanly"
    else:
        error = response.json()["error"]
    assert error["code"] == "upstream_refused" and error["type"] == "upstream_error"
    await settle(gateway.app)
    assert http_count(status, "provider_rejected") == before + 1
