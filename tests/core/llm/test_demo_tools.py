"""The offline demo model calls tools by rule: arithmetic -> `calculator`, a time
question -> `current_time`, both -> parallel calls, tool results -> a final
answer; with no rule to apply it echoes as before. Every body and chunk is
checked against OpenAI's published schema; streams assemble to the plain answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.gateway.streams import StreamAssembler
from core.llm.demo import DEMO_MODEL, DemoProvider, count_tokens
from core.llm.demo_tools import find_expression
from core.llm.types import Deployment
from tests.support.app import AppFactory
from tests.support.contracts import assert_valid

DEPLOYMENT = Deployment(
    id="demo", group="demo", kind="demo", model=DEMO_MODEL, api_base=None, api_key=None
)
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}
CURRENT_TIME = {
    "type": "function",
    "function": {
        "name": "current_time",
        "description": "The current time",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
    },
}
OTHER = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
TOOLS = [CALCULATOR, CURRENT_TIME]


def request(text: str, tools: list[Any] | None = TOOLS, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "demo", "messages": [{"role": "user", "content": text}]}
    if tools is not None:
        body["tools"] = tools
    return {**body, **extra}


async def complete(body: dict[str, Any]) -> dict[str, Any]:
    completion = await DemoProvider().complete(DEPLOYMENT, body)
    assert json.loads(completion.body) == completion.data
    assert_valid("CreateChatCompletionResponse", completion.data)
    return completion.data


async def stream(body: dict[str, Any]) -> list[dict[str, Any]]:
    chunks = [chunk.data async for chunk in DemoProvider().stream(DEPLOYMENT, body)]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    return chunks


async def calls_for(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, parsed arguments) of the tool calls the demo answers `body` with."""
    data = await complete(body)
    message = data["choices"][0]["message"]
    return [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in message.get("tool_calls") or ()
    ]


# --------------------------------------------------------------------------- finding arithmetic


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("what is 12*(3+4)?", "12*(3+4)"),
        ("compute 2^10", "2**10"),
        ("Compute 2^10.", "2**10"),
        ("how much is 7 times 6", "7*6"),
        ("what is 3 x 4", "3*4"),
        ("5 × 2.5 ÷ (1 - 0.5)", "5*2.5/(1-0.5)"),
        ("what's 17 % 5?", "17%5"),
        ("(2+3)*4 please", "(2+3)*4"),
        ("-5 + 3", "-5+3"),
        ("8 divided by 2 plus 1", "8/2+1"),
        ("I have 2 cats and 3 dogs", None),
        ("6 xylophones", None),
        ("hello", None),
    ],
)
def test_arithmetic_is_found_and_normalised(text: str, expression: str | None) -> None:
    assert find_expression(text) == expression


# --------------------------------------------------------------------------- tool calls


async def test_arithmetic_calls_the_calculator() -> None:
    data = await complete(request("what is 12*(3+4)?"))
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["refusal"] is None
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_demo_")
    assert call["function"] == {"name": "calculator", "arguments": '{"expression": "12*(3+4)"}'}
    tokens = count_tokens(call["function"]["arguments"])
    assert data["usage"]["completion_tokens"] == tokens
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + tokens


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ("what time is it in Tokyo?", {"timezone": "Asia/Tokyo"}),
        ("What's the time in New York", {"timezone": "America/New_York"}),
        ("today’s date, please", {}),
        ("what day is it?", {}),
    ],
)
async def test_a_time_question_calls_current_time(text: str, arguments: dict[str, str]) -> None:
    assert await calls_for(request(text)) == [("current_time", arguments)]


async def test_both_questions_make_two_parallel_calls_with_stable_ids() -> None:
    body = request("what time is it in London, and how much is 7 times 6?")
    assert await calls_for(body) == [
        ("calculator", {"expression": "7*6"}),
        ("current_time", {"timezone": "Europe/London"}),
    ]
    first, again = await complete(body), await complete(body)
    ids = [c["id"] for c in first["choices"][0]["message"]["tool_calls"]]
    assert ids == [c["id"] for c in again["choices"][0]["message"]["tool_calls"]]
    assert len(set(ids)) == 2
    other = await complete(request("what time is it in Paris, and 7 times 6?"))
    assert not set(ids) & {c["id"] for c in other["choices"][0]["message"]["tool_calls"]}

    one = await calls_for({**body, "parallel_tool_calls": False})
    assert one == [("calculator", {"expression": "7*6"})]


async def test_tool_choice_forces_or_forbids() -> None:
    text = "what is 2+2"
    forced_time = {"type": "function", "function": {"name": "current_time"}}
    assert await calls_for(request(text, tool_choice=forced_time)) == [("current_time", {})]
    forced_calc = {"type": "function", "function": {"name": "calculator"}}
    assert await calls_for(request(text, tool_choice=forced_calc)) == [
        ("calculator", {"expression": "2+2"})
    ]
    assert await calls_for(request("hi", tool_choice=forced_calc)) == [("calculator", {})]
    assert await calls_for(request("what time is it", tool_choice="required")) == [
        ("current_time", {})
    ]
    assert await calls_for(request("hi", [OTHER, *TOOLS], tool_choice="required")) == [
        ("lookup", {})
    ]
    assert await calls_for(request(text, tool_choice="none")) == []
    assert await calls_for(request(text, tools=[OTHER])) == []  # calculator not offered


# --------------------------------------------------------------------------- after the tools ran


def after_tools(results: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    """The conversation after the demo called calculator (id a) and current_time (id b)."""
    calls = [
        {"id": "a", "type": "function", "function": {"name": "calculator", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
    ]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "what is 12*7 and what time is it?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": i, "content": c} for i, c in results),
    ]
    return {"model": "demo", "messages": messages, "tools": TOOLS, **extra}


@pytest.mark.parametrize(
    "results",
    [
        [("b", "2026-12-01T10:00:00+00:00"), ("a", "84")],
        [
            ("a", '{"expression": "12*7", "result": 84}'),
            ("b", '{"iso": "2026-12-01T10:00:00+00:00"}'),
        ],
    ],
    ids=["plain", "json"],
)
async def test_tool_results_get_a_final_answer_in_call_order(results: list[Any]) -> None:
    data = await complete(after_tools(results))
    choice = data["choices"][0]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == "The result is 84. It is 2026-12-01T10:00:00+00:00."
    # the agent's last, tool-less call gets the same answer
    tool_less = await complete({**after_tools(results), "tools": None})
    assert tool_less["choices"][0]["message"]["content"] == choice["message"]["content"]


async def test_a_failed_tool_is_reported() -> None:
    data = await complete(after_tools([("a", '{"error": "division by zero"}')]))
    assert (
        data["choices"][0]["message"]["content"] == "The calculator call failed: division by zero."
    )


async def test_the_demo_loop_ends_with_the_answer() -> None:
    body = request("what is 12*(3+4)?")
    data = await complete(body)
    [call] = data["choices"][0]["message"]["tool_calls"]
    body["messages"] += [
        data["choices"][0]["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "84"},
    ]
    final = await complete(body)
    assert final["choices"][0]["message"]["content"] == "The result is 84."


# --------------------------------------------------------------------------- the echo


ECHO = "This is Skygate's offline demo model (no provider is configured). You said: hello there"


async def test_the_echo_is_unchanged_without_a_tool_rule_to_apply() -> None:
    plain = await complete(request("hello there", tools=None))
    assert plain["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": ECHO, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert plain["usage"] == {"prompt_tokens": 2, "completion_tokens": 20, "total_tokens": 22}
    for tools in (TOOLS, [OTHER]):
        offered = await complete(request("hello there", tools=tools))
        assert {**offered, "created": 0} == {**plain, "created": 0}
    chunks = await stream(request("hello there", tools=TOOLS))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == ECHO


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize(
    "body",
    [
        request("what time is it in Tokyo and what is 2^10?", n=2),
        request("what is 12*(3+4)?"),
        after_tools([("a", "84"), ("b", "noon")]),
        request("hello there"),
    ],
    ids=["parallel-calls-n2", "one-call", "final-answer", "echo"],
)
async def test_a_stream_has_openais_shapes_and_assembles_to_the_answer(
    body: dict[str, Any],
) -> None:
    plain = await complete(body)
    chunks = await stream(body)
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    assert assembler.complete
    assembled = assembler.completion()
    assert assembled["choices"] == plain["choices"]
    assert assembled["usage"] == plain["usage"]
    assert chunks[-1]["choices"] == []  # usage last, as with include_usage

    calls = plain["choices"][0]["message"].get("tool_calls")
    if calls:
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        assert deltas[0] == {"role": "assistant", "content": None}
        openings = [d["tool_calls"][0] for d in deltas if "id" in d.get("tool_calls", [{}])[0]]
        assert [o["function"] for o in openings][:: len(plain["choices"])] == [
            {"name": c["function"]["name"], "arguments": ""} for c in calls
        ]
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finishes[-1] == "tool_calls"


# --------------------------------------------------------------------------- through the gateway


async def test_the_gateway_serves_the_demos_tool_calls(app_factory: AppFactory) -> None:
    async with app_factory() as (_, client):
        body = request("what is 6 x 7?")
        response = await client.post("/api/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        [call] = response.json()["choices"][0]["message"]["tool_calls"]
        assert call["function"] == {"name": "calculator", "arguments": '{"expression": "6*7"}'}

        headers = {"Cache-Control": "no-cache"}
        streamed = await client.post(
            "/api/v1/chat/completions", json={**body, "stream": True}, headers=headers
        )
        data = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert data[-1] == "[DONE]"
        assembler = StreamAssembler()
        for item in data[:-1]:
            chunk = json.loads(item)
            assert_valid("CreateChatCompletionStreamResponse", chunk)
            assembler.add(chunk)
        assert assembler.completion()["choices"][0]["message"]["tool_calls"] == [call]
