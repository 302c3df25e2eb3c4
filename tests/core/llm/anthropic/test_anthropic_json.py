"""JSON mode on Anthropic (`response_format`, which Anthropic lacks): the forced tool
the request offers (`core.llm.anthropic_request.json_tool`), and its call turned back
into content, non-streamed and streamed, each answer validated with OpenAI's schema."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.llm.anthropic_json import (
    JSON_TOOL_DESCRIPTION,
    JSON_TOOL_NAME,
    JsonTool,
    json_tool,
)
from core.llm.types import ProviderError
from tests.support.anthropic import (
    WEATHER,
    answer_body,
    answered,
    block_events,
    json_delta,
    native,
    refused,
    stream_close,
    stream_start,
    streamed,
    text_delta,
)

CITY: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
    "required": ["city", "temp"],
    "additionalProperties": False,
}
FORCED = {"type": "tool", "name": "weather", "disable_parallel_tool_use": True}
PLAIN = JsonTool("weather", wrapped=False)
WRAPPED = JsonTool("cities", wrapped=True)


def _schema(schema: Any = CITY, **spec: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, **spec}}


# -- requests -------------------------------------------------------------------------------
def test_a_json_schema_is_a_forced_tool_named_after_it() -> None:
    response_format = _schema(strict=True, description="The weather of one city.")
    request = native(response_format=response_format, stream=True)
    assert request["tools"] == [
        {"name": "weather", "description": "The weather of one city.", "input_schema": CITY}
    ]
    assert request["tool_choice"] == FORCED
    assert "strict" not in json.dumps(request)  # Anthropic's strict tool use is a beta
    assert json_tool({"response_format": response_format}) == PLAIN


def test_a_schema_that_is_not_an_object_is_wrapped_its_defs_hoisted() -> None:
    schema = {
        "type": "array",
        "items": {"$ref": "#/$defs/city"},
        "$defs": {"city": {"type": "string"}},
    }
    response_format = _schema(schema, name="cities")
    request = native(response_format=response_format)
    assert request["tools"] == [
        {
            "name": "cities",
            "description": JSON_TOOL_DESCRIPTION,
            "input_schema": {
                "type": "object",
                "properties": {"value": {"type": "array", "items": {"$ref": "#/$defs/city"}}},
                "required": ["value"],
                "additionalProperties": False,
                "$defs": {"city": {"type": "string"}},
            },
        }
    ]
    assert request["tool_choice"] == {**FORCED, "name": "cities"}
    assert json_tool({"response_format": response_format}) == WRAPPED
    # No top-level type at all is not an object either.
    untyped = _schema({"anyOf": [{"type": "string"}, {"type": "null"}]})
    assert json_tool({"response_format": untyped}) == JsonTool("weather", wrapped=True)


def test_json_object_is_any_object_as_litellm_sent_it() -> None:
    request = native(response_format={"type": "json_object"}, tool_choice="auto")
    assert request["tools"] == [
        {
            "name": JSON_TOOL_NAME,
            "description": JSON_TOOL_DESCRIPTION,
            "input_schema": {"type": "object", "properties": {}, "additionalProperties": True},
        }
    ]
    assert request["tool_choice"] == {**FORCED, "name": JSON_TOOL_NAME}
    assert json_tool({"response_format": {"type": "json_object"}}) == JsonTool(
        JSON_TOOL_NAME, wrapped=False
    )
    # A json_schema without a schema is the same: any object.
    request = native(response_format={"type": "json_schema", "json_schema": {"name": "any"}})
    assert request["tools"][0]["input_schema"]["additionalProperties"] is True


def test_text_and_no_response_format_change_nothing() -> None:
    assert native(response_format={"type": "text"}) == native()
    assert native(response_format={"type": "text"}, tools=[WEATHER]) == native(tools=[WEATHER])
    assert json_tool({"response_format": {"type": "text"}}) is None
    assert json_tool({}) is None


@pytest.mark.parametrize("name", [None, "", "my schema", "a.b", "x" * 65, "é", 7, "ok\n"], ids=repr)
def test_a_name_anthropic_would_refuse_is_the_default(name: Any) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": CITY}}
    assert native(response_format=response_format)["tools"][0]["name"] == JSON_TOOL_NAME
    assert json_tool({"response_format": response_format}) == JsonTool(JSON_TOOL_NAME, False)
    valid = {"type": "json_schema", "json_schema": {"name": "A-b_9" + "x" * 59, "schema": CITY}}
    assert json_tool({"response_format": valid}) == JsonTool("A-b_9" + "x" * 59, False)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            {"response_format": _schema(), "tools": [WEATHER]},
            "either `tools` or a JSON `response_format`",
        ),
        (
            {"response_format": {"type": "json_object"}, "tools": [WEATHER], "tool_choice": "none"},
            "either `tools` or a JSON `response_format`",
        ),
        ({"response_format": {"type": "json_schema"}}, "needs its `json_schema` object"),
        ({"response_format": _schema("a string")}, "must be a JSON Schema object"),
        ({"response_format": {"type": "xml"}}, "is not text, json_object or json_schema"),
        ({"response_format": "json"}, "must be an object"),
    ],
)
def test_json_modes_anthropic_cannot_do_are_a_400(extra: dict[str, Any], says: str) -> None:
    assert says in refused(**extra)
    if "tools" not in extra:  # the same 400 from `json_tool`, which the answer side calls
        with pytest.raises(ProviderError) as caught:
            json_tool(extra)
        assert says in caught.value.message


# -- answers --------------------------------------------------------------------------------
def _use(given: Any, name: str = "weather", block_id: str = "toolu_j") -> dict[str, Any]:
    return {"type": "tool_use", "id": block_id, "name": name, "input": given}


def test_the_forced_call_is_the_content() -> None:
    data = answered(answer_body([_use({"city": "Paris", "temp": 21.5})], "tool_use"), PLAIN)
    assert data["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": '{"city":"Paris","temp":21.5}',
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert data["usage"]["total_tokens"] == 17


def test_a_wrapped_call_is_unwrapped() -> None:
    data = answered(
        answer_body([_use({"value": ["Paris", "Rome"]}, "cities")], "tool_use"), WRAPPED
    )
    choice = data["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ('["Paris","Rome"]', "stop")
    scalar = answered(answer_body([_use({"value": None}, "cities")], "tool_use"), WRAPPED)
    assert scalar["choices"][0]["message"]["content"] == "null"


def test_a_json_answer_cut_by_max_tokens_stays_length() -> None:
    data = answered(answer_body([_use({"city": "Par"})], "max_tokens"), PLAIN)
    choice = data["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ('{"city":"Par"}', "length")
    cut = answered(answer_body([_use({}, "cities")], "max_tokens"), WRAPPED)["choices"][0]
    assert (cut["message"]["content"], cut["finish_reason"]) == (None, "length")
    # Cut before the tool was even called: no content.
    early = answered(answer_body([], "max_tokens"), PLAIN)["choices"][0]
    assert (early["message"]["content"], early["finish_reason"]) == (None, "length")


def test_text_without_the_call_is_content_and_text_beside_it_is_not() -> None:
    refusal = answered(answer_body([{"type": "text", "text": "I can't."}], "refusal"), PLAIN)
    assert refusal["choices"][0]["message"]["content"] == "I can't."
    assert refusal["choices"][0]["finish_reason"] == "content_filter"
    beside = [{"type": "text", "text": "Here:"}, _use({"city": "Oslo", "temp": 3})]
    assert answered(answer_body(beside, "tool_use"), PLAIN)["choices"][0]["message"] == {
        "role": "assistant",
        "content": '{"city":"Oslo","temp":3}',
        "refusal": None,
    }


@pytest.mark.parametrize(
    ("content", "tool", "says"),
    [
        ([_use("Paris")], PLAIN, "the JSON tool's input not as an object"),
        ([_use(["Paris"])], PLAIN, "the JSON tool's input not as an object"),
        ([_use(None)], PLAIN, "the JSON tool's input not as an object"),
        ([_use({"cities": []}, "cities")], WRAPPED, "without its value"),
        ([_use([1], "cities")], WRAPPED, "not as an object"),
        ([_use({"city": "Paris"}, "get_weather")], PLAIN, "a call of 'get_weather', not of"),
        ([_use({}), _use({}, block_id="toolu_k")], PLAIN, "the JSON tool called twice"),
        ([{"type": "tool_use", "input": {}}], PLAIN, "without a name"),
        ([{"type": "text", "text": "no call"}], PLAIN, "a tool_use stop without the JSON tool"),
        ([_use({"n": 2**70})], PLAIN, "a tool input that is not JSON"),
    ],
)
def test_hostile_json_answers_are_garbage(content: list[Any], tool: JsonTool, says: str) -> None:
    with pytest.raises(ProviderError) as caught:
        answered(answer_body(content, "tool_use"), tool)
    assert caught.value.kind == "garbage"
    assert says in caught.value.message


def test_without_json_tool_a_call_is_still_a_tool_call() -> None:
    """The default (no JSON mode) is today's behaviour, for callers that pass none."""
    message = answered(answer_body([_use({"city": "Paris"})], "tool_use"))["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["tool_calls"][0]["function"]["name"] == "weather"


# -- streams --------------------------------------------------------------------------------
def _content(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"]
    )


def _finish(chunks: list[dict[str, Any]]) -> list[str]:
    return [
        chunk["choices"][0]["finish_reason"]
        for chunk in chunks
        if chunk["choices"] and chunk["choices"][0]["finish_reason"]
    ]


def _tool_block(*pieces: str, name: str = "weather", index: int = 0) -> list[dict[str, Any]]:
    start = {"type": "tool_use", "id": "toolu_j", "name": name, "input": {}}
    return block_events(index, start, json_delta(""), *map(json_delta, pieces))


def test_a_streamed_json_answer_in_pieces() -> None:
    pieces = ['{"city": "Pa', 'ris", "te', 'mp": 21', ".5}"]
    events = [stream_start(), *_tool_block(*pieces), *stream_close("tool_use")]
    chunks, state = streamed(events, PLAIN)
    assert state.finished
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c["choices"][0]["delta"] for c in chunks[1:5]]
    assert contents == [{"content": piece} for piece in pieces]  # as they come
    assert json.loads(_content(chunks)) == {"city": "Paris", "temp": 21.5}
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks if c["choices"])
    assert _finish(chunks) == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 15


def test_a_streamed_wrapped_answer_is_held_and_unwrapped() -> None:
    pieces = ['{"val', 'ue": ["Par', 'is", "Rome"', "]}"]
    events = [stream_start(), *_tool_block(*pieces, name="cities"), *stream_close("tool_use")]
    chunks, state = streamed(events, WRAPPED)
    assert state.finished
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": '["Paris","Rome"]'},
        {},
    ]
    assert _finish(chunks) == ["stop"]


def test_a_streamed_json_answer_cut_by_max_tokens() -> None:
    chunks, _ = streamed(
        [stream_start(), *_tool_block('{"city": "Pa'), *stream_close("max_tokens")], PLAIN
    )
    assert (_content(chunks), _finish(chunks)) == ('{"city": "Pa', ["length"])
    # Wrapped: what came of the value.
    events = [
        stream_start(),
        *_tool_block('{ "value" : ["Par', 'is", "Ro', name="cities"),
        *stream_close("max_tokens"),
    ]
    chunks, _ = streamed(events, WRAPPED)
    assert (_content(chunks), _finish(chunks)) == ('["Paris", "Ro', ["length"])
    # Cut before the value began: no content, still length.
    events = [stream_start(), *_tool_block('{"val', name="cities"), *stream_close("max_tokens")]
    chunks, _ = streamed(events, WRAPPED)
    assert (_content(chunks), _finish(chunks)) == ("", ["length"])


def test_a_streamed_call_with_its_input_whole_or_empty() -> None:
    whole = {"type": "tool_use", "id": "t", "name": "weather", "input": {"city": "Oslo"}}
    chunks, _ = streamed([*block_events(0, whole), *stream_close("tool_use")], PLAIN)
    assert (_content(chunks), _finish(chunks)) == ('{"city":"Oslo"}', ["stop"])
    # No input streamed: Anthropic's empty input, as the non-streamed answer gives it.
    chunks, _ = streamed([*_tool_block(), *stream_close("tool_use")], PLAIN)
    assert (_content(chunks), _finish(chunks)) == ("{}", ["stop"])
    whole = {**whole, "name": "cities", "input": {"value": 3}}
    chunks, _ = streamed([*block_events(0, whole), *stream_close("tool_use")], WRAPPED)
    assert (_content(chunks), _finish(chunks)) == ("3", ["stop"])


def test_a_streamed_refusal_without_the_call_is_text() -> None:
    events = [
        stream_start(),
        *block_events(0, {"type": "text", "text": ""}, text_delta("I can't.")),
        *stream_close("refusal"),
    ]
    chunks, _ = streamed(events, PLAIN)
    assert (_content(chunks), _finish(chunks)) == ("I can't.", ["content_filter"])


@pytest.mark.parametrize(
    ("events", "tool", "says"),
    [
        (_tool_block('{"city": "Paris"}', name="get_weather"), PLAIN, "a call of 'get_weather'"),
        ([*_tool_block("{}"), *_tool_block("{}", index=1)], PLAIN, "the JSON tool called twice"),
        (
            block_events(0, {"type": "tool_use", "id": "t", "name": "weather", "input": "x"}),
            PLAIN,
            "the JSON tool's input not as an object",
        ),
        (
            [*_tool_block('{"cities": []}', name="cities"), *stream_close("tool_use")],
            WRAPPED,
            "without its value",
        ),
        (
            [*_tool_block('{"value": [1,', name="cities"), *stream_close("tool_use")],
            WRAPPED,
            "not as an object",
        ),
        (
            [*_tool_block("[1]", name="cities"), *stream_close("end_turn")],
            WRAPPED,
            "not as an object",
        ),
        ([*_tool_block(name="cities"), *stream_close("tool_use")], WRAPPED, "without its value"),
        (
            [*block_events(0, {"type": "text", "text": ""}), *stream_close("tool_use")],
            PLAIN,
            "a tool_use stop without the JSON tool",
        ),
        (
            [
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
                {"type": "content_block_delta", "index": 0, "delta": json_delta("{}")},
            ],
            PLAIN,
            "an input delta outside a tool_use block",
        ),
    ],
)
def test_hostile_json_streams_are_garbage(
    events: list[dict[str, Any]], tool: JsonTool, says: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        streamed(events, tool)
    assert caught.value.kind == "garbage"
    assert says in caught.value.message
