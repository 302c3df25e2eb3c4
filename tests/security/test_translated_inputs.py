"""Hostile-but-schema-valid chat requests on every translated provider path (Anthropic's,
Gemini's and Cohere's native translations, and the direct OpenAI path for parity).

Every client is a possible attacker, and a buggy client looks the same: a body that
passes the gateway's allow-list (`core.gateway.schemas`) may still be one the
translation cannot serve (a tool result answering nothing, arguments that are not a
JSON object, an image the provider would have to fetch, ...). Each variant below must
get an answer (200) or a clear 4xx in OpenAI's error shape, never a 5xx or a
traceback, and a request refused by a translation must not reach the provider.
A stream that was accepted ends with `[DONE]`, or with an error event that is not
the gateway's own failure.

When a variant fails with a 5xx, the assertion message carries the server's log
(its traceback) as captured from the app.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.app import routed_app
from tests.support.contracts import assert_valid, sse_data
from tests.support.providers import NATIVE, provider_router_yaml, set_keys
from tests.support.requests import CHAT

PROVIDERS = ["anthropic", "gemini", "cohere", "openai"]

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
    "AAAABJRU5ErkJggg=="
)
MIB = 1024 * 1024


# -- bodies -----------------------------------------------------------------------------
def user(content: Any = "hi") -> dict[str, Any]:
    return {"role": "user", "content": content}


def system(content: Any = "be terse") -> dict[str, Any]:
    return {"role": "system", "content": content}


def assistant(content: Any = "ok") -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def call(call_id: str = "call_1", name: str = "lookup", arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def calling(*calls: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": list(calls)}


def result(call_id: str | None = "call_1", content: Any = "42") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "tool", "content": content}
    if call_id is not None:
        message["tool_call_id"] = call_id
    return message


def tool(name: str = "lookup", parameters: Any = "default", **extra: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name, "description": "Look a thing up.", **extra}
    if parameters == "default":
        parameters = {"type": "object", "properties": {"q": {"type": "string"}}}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


def image(url: str) -> dict[str, Any]:
    return user(
        [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
    )


def audio(data: str, fmt: str = "wav") -> dict[str, Any]:
    return user(
        [
            {"type": "text", "text": "transcribe"},
            {"type": "input_audio", "input_audio": {"data": data, "format": fmt}},
        ]
    )


def after_call(arguments: str) -> dict[str, Any]:
    """A conversation replaying a call with `arguments`, then its result."""
    return {
        "messages": [user("look it up"), calling(call(arguments=arguments)), result()],
        "tools": [tool()],
    }


def nested(depth: int) -> dict[str, Any]:
    """A JSON Schema nested `depth` objects deep (the body's own depth limit is 64)."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def alternating(count: int, roles: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"role": roles[i % len(roles)], "content": f"message {i}"} for i in range(count)]


def json_schema(**spec: Any) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": spec}}


# -- variants ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Variant:
    """A request body's parameters beside `model` (`messages` defaults to one user
    message); `streamed`: also sent with `stream: true`; `refused_by`: providers that
    must answer 4xx without calling the upstream (what the translation refuses for
    the client's safety or can never serve)."""

    build: Callable[[], dict[str, Any]]
    streamed: bool = True
    refused_by: frozenset[str] = frozenset()


NATIVE_IMAGES = frozenset({"anthropic", "gemini"})  # take images as data: URLs only
PARSED_ARGUMENTS = frozenset({"anthropic", "gemini"})  # need arguments as a JSON object
MATCHED_RESULTS = frozenset({"anthropic", "gemini"})  # check results answer a call
NO_N = frozenset({"anthropic", "cohere"})  # one choice per request

VARIANTS: dict[str, Variant] = {
    # conversations with tool results that answer no call
    "result-answers-no-call": Variant(
        lambda: {
            "messages": [user(), calling(call("call_1")), result("call_nope")],
            "tools": [tool()],
        },
        refused_by=MATCHED_RESULTS,
    ),
    "result-before-any-assistant": Variant(
        lambda: {"messages": [result("call_1"), user()], "tools": [tool()]},
        refused_by=MATCHED_RESULTS,
    ),
    "result-first-and-only": Variant(
        lambda: {"messages": [result("call_1")]}, refused_by=MATCHED_RESULTS
    ),
    "two-results-for-one-call": Variant(
        lambda: {
            "messages": [user(), calling(call()), result(), result()],
            "tools": [tool()],
        },
        refused_by=MATCHED_RESULTS,
    ),
    "call-unanswered-then-user": Variant(
        lambda: {"messages": [user(), calling(call()), user("never mind")], "tools": [tool()]}
    ),
    "result-after-a-user-turn": Variant(
        lambda: {
            "messages": [user(), calling(call()), user("wait"), result()],
            "tools": [tool()],
        },
        refused_by=MATCHED_RESULTS,
    ),
    "result-without-tool-call-id": Variant(
        lambda: {"messages": [user(), calling(call()), result(None)], "tools": [tool()]},
        refused_by=MATCHED_RESULTS,
    ),
    "two-calls-one-answered": Variant(
        lambda: {
            "messages": [user(), calling(call("a"), call("b")), result("a"), user("next")],
            "tools": [tool()],
        }
    ),
    "results-out-of-order": Variant(
        lambda: {
            "messages": [user(), calling(call("a"), call("b")), result("b"), result("a")],
            "tools": [tool()],
        }
    ),
    "duplicate-call-ids": Variant(
        lambda: {
            "messages": [user(), calling(call("a"), call("a")), result("a"), result("a")],
            "tools": [tool()],
        }
    ),
    "result-with-image-content": Variant(
        lambda: {
            "messages": [
                user(),
                calling(call()),
                result(
                    "call_1",
                    [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}],
                ),
            ],
            "tools": [tool()],
        }
    ),
    "result-as-refusal-parts": Variant(
        lambda: {
            "messages": [
                user(),
                calling(call()),
                result("call_1", [{"type": "refusal", "refusal": "no"}]),
            ],
            "tools": [tool()],
        }
    ),
    "assistant-with-image": Variant(
        lambda: {
            "messages": [
                user(),
                assistant(
                    [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]
                ),
                user("and?"),
            ]
        }
    ),
    "system-with-audio": Variant(
        lambda: {
            "messages": [
                system([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]),
                user(),
            ]
        }
    ),
    "assistant-custom-tool-call": Variant(
        lambda: {
            "messages": [
                user(),
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "custom", "custom": {"name": "x", "input": "y"}}
                    ],
                },
                result("c1"),
            ]
        }
    ),
    "function-role-message": Variant(
        lambda: {"messages": [user(), {"role": "function", "name": "lookup", "content": "42"}]}
    ),
    # tool call arguments
    "arguments-not-json": Variant(lambda: after_call("{not json"), refused_by=PARSED_ARGUMENTS),
    "arguments-json-array": Variant(lambda: after_call("[1, 2]"), refused_by=PARSED_ARGUMENTS),
    "arguments-json-null": Variant(lambda: after_call("null"), refused_by=PARSED_ARGUMENTS),
    "arguments-json-string": Variant(lambda: after_call('"text"'), refused_by=PARSED_ARGUMENTS),
    "arguments-empty": Variant(lambda: after_call("")),
    "arguments-deeply-nested": Variant(lambda: after_call('{"a":' * 300 + "1" + "}" * 300)),
    "arguments-huge-object": Variant(
        lambda: after_call(
            json.dumps({f"k{i}": {"v": "x" * 50, "n": [i, i]} for i in range(10_000)})
        )
    ),
    "arguments-lone-surrogate-escape": Variant(
        lambda: after_call('{"q": "\\ud800"}'), refused_by=PARSED_ARGUMENTS
    ),
    "arguments-infinite-number": Variant(
        lambda: after_call('{"q": 1e400}'), refused_by=PARSED_ARGUMENTS
    ),
    "arguments-huge-integer": Variant(lambda: after_call('{"q": 123456789012345678901234567890}')),
    # tool choice and tool lists
    "tool-choice-unknown-function": Variant(
        lambda: {
            "tools": [tool()],
            "tool_choice": {"type": "function", "function": {"name": "missing"}},
        },
        refused_by=frozenset({"anthropic", "gemini", "cohere"}),
    ),
    "tool-choice-function-no-tools": Variant(
        lambda: {"tool_choice": {"type": "function", "function": {"name": "lookup"}}},
        refused_by=frozenset({"anthropic", "gemini", "cohere"}),
    ),
    "tool-choice-required-no-tools": Variant(lambda: {"tool_choice": "required"}),
    "tool-choice-none-with-tools": Variant(lambda: {"tools": [tool()], "tool_choice": "none"}),
    "tools-empty-list": Variant(lambda: {"tools": []}),
    "tools-empty-list-with-choice": Variant(lambda: {"tools": [], "tool_choice": "auto"}),
    "tool-choice-custom": Variant(
        lambda: {
            "tools": [tool()],
            "tool_choice": {"type": "custom", "custom": {"name": "lookup"}},
        },
        refused_by=frozenset({"anthropic", "gemini", "cohere"}),
    ),
    "custom-tool": Variant(
        lambda: {"tools": [{"type": "custom", "custom": {"name": "grammar"}}]},
        refused_by=frozenset({"anthropic", "gemini", "cohere"}),
    ),
    "allowed-tools-none-match": Variant(
        lambda: {
            "tools": [tool()],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "other"}}],
                },
            },
        },
        refused_by=frozenset({"anthropic", "gemini", "cohere"}),
    ),
    "allowed-tools-empty": Variant(
        lambda: {
            "tools": [tool()],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": []},
            },
        }
    ),
    "allowed-tools-function-is-a-string": Variant(
        lambda: {
            "tools": [tool()],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": "lookup"}],
                },
            },
        }
    ),
    "allowed-tools-name-is-a-list": Variant(
        lambda: {
            "tools": [tool()],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": ["lookup"]}}],
                },
            },
        }
    ),
    "allowed-tools-bare-name": Variant(
        lambda: {
            "tools": [tool()],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "required", "tools": [{"name": "lookup"}]},
            },
        }
    ),
    "duplicate-tool-names": Variant(lambda: {"tools": [tool(), tool()]}),
    "parallel-false-choice-none": Variant(
        lambda: {"tools": [tool()], "tool_choice": "none", "parallel_tool_calls": False}
    ),
    "tool-parameters-missing": Variant(lambda: {"tools": [tool(parameters=None)]}),
    "tool-parameters-empty": Variant(lambda: {"tools": [tool(parameters={})]}),
    "tool-parameters-string-root": Variant(
        lambda: {"tools": [tool(parameters={"type": "string"})]}
    ),
    "tool-parameters-ref-to-nowhere": Variant(
        lambda: {
            "tools": [
                tool(
                    parameters={"type": "object", "properties": {"a": {"$ref": "#/$defs/nowhere"}}}
                )
            ]
        }
    ),
    "tool-parameters-deeply-nested": Variant(lambda: {"tools": [tool(parameters=nested(25))]}),
    "tool-parameters-not-a-schema": Variant(
        lambda: {"tools": [tool(parameters={"type": 42, "properties": "x", "required": {}})]}
    ),
    "tool-strict-mixed": Variant(
        lambda: {"tools": [tool("a", strict=True), tool("b", strict=False)]}
    ),
    # response formats
    # (A schema whose root is not an object is wrapped for Anthropic's forced tool; the
    # fake answers every tool with the same arguments, so that round trip is checked by
    # tests/core/llm/anthropic/test_anthropic_json.py instead.)
    "json-schema-without-schema": Variant(lambda: json_schema(name="answer")),
    "json-schema-without-spec": Variant(lambda: {"response_format": {"type": "json_schema"}}),
    "json-schema-schema-not-object": Variant(lambda: json_schema(name="answer", schema="string")),
    "json-schema-odd-name": Variant(
        lambda: json_schema(name="ans wer/../é" * 20, schema={"type": "object"})
    ),
    "json-schema-with-tools": Variant(
        lambda: {**json_schema(name="answer", schema={"type": "object"}), "tools": [tool()]}
    ),
    "json-object-with-tools": Variant(
        lambda: {"response_format": {"type": "json_object"}, "tools": [tool()]}
    ),
    # media
    "image-web-url": Variant(
        lambda: {"messages": [image("https://169.254.169.254/latest/meta-data/")]},
        refused_by=NATIVE_IMAGES,
    ),
    "image-bad-media-type": Variant(
        lambda: {"messages": [image(f"data:text/html;base64,{PNG}")]}, refused_by=NATIVE_IMAGES
    ),
    "image-bad-base64": Variant(
        lambda: {"messages": [image("data:image/png;base64,!!!not-base64!!!")]},
        refused_by=NATIVE_IMAGES,
    ),
    "image-empty-data": Variant(lambda: {"messages": [image("data:image/png;base64,")]}),
    "image-not-base64-encoded": Variant(
        lambda: {"messages": [image("data:image/png,rawbytes")]}, refused_by=NATIVE_IMAGES
    ),
    "image-no-comma": Variant(
        lambda: {"messages": [image("data:image/png;base64")]}, refused_by=NATIVE_IMAGES
    ),
    "audio-bad-format": Variant(lambda: {"messages": [audio("AAAA", "flac")]}),
    "audio-bad-base64": Variant(lambda: {"messages": [audio("!!!")]}),
    "file-part": Variant(
        lambda: {
            "messages": [
                user([{"type": "file", "file": {"file_data": "AAAA", "filename": "a.pdf"}}])
            ]
        }
    ),
    # messages
    "empty-content-string": Variant(lambda: {"messages": [user("")]}),
    "content-empty-list": Variant(lambda: {"messages": [user([])]}),
    "content-null": Variant(lambda: {"messages": [user(None)]}),
    "only-system": Variant(lambda: {"messages": [system()]}),
    "only-assistant": Variant(lambda: {"messages": [assistant()]}),
    "system-in-the-middle": Variant(
        lambda: {"messages": [user(), assistant(), system("new rules"), user("go on")]}
    ),
    "developer-message": Variant(
        lambda: {"messages": [{"role": "developer", "content": "x"}, user()]}
    ),
    "200-user-messages": Variant(lambda: {"messages": alternating(200, ("user",))}),
    "200-assistant-messages": Variant(lambda: {"messages": alternating(200, ("assistant",))}),
    "200-alternating-turns": Variant(lambda: {"messages": alternating(200, ("user", "assistant"))}),
    "200-alternating-system-user": Variant(
        lambda: {"messages": alternating(200, ("system", "user"))}
    ),
    "unicode-edge-cases": Variant(
        lambda: {
            "messages": [
                user(
                    "\u0000 nul \u200b\u200d zwj \u202e rtl \ufeff bom e\u0301 "
                    "👩‍👩‍👧 \U0010ffff \uffff"
                )
            ]
        }
    ),
    "unicode-in-tool-names": Variant(lambda: {"tools": [tool("look\u202eup")]}),
    "text-of-1-mib": Variant(lambda: {"messages": [user("a" * MIB)]}, streamed=False),
    "reasoning-fields-replayed": Variant(
        lambda: {
            "messages": [
                user(),
                {
                    "role": "assistant",
                    "content": "ok",
                    "reasoning_content": "thought",
                    "thinking_blocks": [
                        {"type": "thinking", "thinking": "x", "signature": "forged"}
                    ],
                },
                user("more"),
            ]
        }
    ),
    "cache-control-marks": Variant(
        lambda: {
            "messages": [
                user(
                    [
                        {
                            "type": "text",
                            "text": "hi",
                            "cache_control": {"type": "ephemeral", "ttl": "1h"},
                        }
                    ]
                )
            ]
        }
    ),
    # sampling parameters
    "n-2": Variant(lambda: {"n": 2}, refused_by=NO_N),
    "n-5": Variant(lambda: {"n": 5}, refused_by=NO_N),
    "stop-5-strings": Variant(lambda: {"stop": ["a", "b", "c", "d", "e"]}),
    "stop-empty-strings": Variant(lambda: {"stop": ["", ""]}),
    "max-tokens-1": Variant(lambda: {"max_tokens": 1}),
    "max-tokens-huge": Variant(lambda: {"max_tokens": 2**63}),
    "temperature-0": Variant(lambda: {"temperature": 0}),
    "top-p-0-top-k-0": Variant(lambda: {"top_p": 0, "top_k": 0}),
    "seed-huge": Variant(lambda: {"seed": 2**64 - 1}),
    "seed-beyond-64-bits": Variant(lambda: {"seed": 2**70}),
    "seed-negative-huge": Variant(lambda: {"seed": -(2**63)}),
    "logprobs": Variant(lambda: {"logprobs": True, "top_logprobs": 20}),
    "logit-bias": Variant(lambda: {"logit_bias": {"50256": -100}}),
}


# -- the gateway ------------------------------------------------------------------------
@pytest.fixture
async def client(
    upstream: FakeUpstream, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    set_keys(monkeypatch)
    async with routed_app(
        provider_router_yaml(upstream), tmp_path, database_url=sqlite_url
    ) as http:
        yield http  # no retries, no cooldown, no cache


def _log(capfd: pytest.CaptureFixture[str]) -> str:
    out, err = capfd.readouterr()
    return (out + err)[-6000:]


def _cases() -> list[Any]:
    cases = []
    for name, variant in VARIANTS.items():
        for provider in PROVIDERS:
            modes = [False, True] if variant.streamed else [False]
            for stream in modes:
                mode = "stream" if stream else "complete"
                cases.append(pytest.param(provider, name, stream, id=f"{provider}-{name}-{mode}"))
    return cases


def _assert_helpful(error: Any, where: str) -> None:
    assert_valid("ErrorResponse", error)
    message = error["error"]["message"]
    assert isinstance(message, str) and len(message) >= 10, f"{where}: unhelpful {message!r}"
    assert "Traceback" not in message and ".py" not in message, f"{where}: internals {message!r}"


@pytest.mark.parametrize(("provider", "variant", "stream"), _cases())
async def test_a_hostile_request_is_answered_or_refused_never_a_server_error(
    client: httpx.AsyncClient,
    upstream: FakeUpstream,
    capfd: pytest.CaptureFixture[str],
    provider: str,
    variant: str,
    stream: bool,
) -> None:
    native = NATIVE[provider]
    case = VARIANTS[variant]
    body: dict[str, Any] = {"model": native.group, "messages": [user()], **case.build()}
    if stream:
        body["stream"] = True
    response = await client.post(CHAT, json=body)
    where = f"{provider}/{variant}/{'stream' if stream else 'complete'}"
    status = response.status_code
    assert status < 500, (
        f"{where}: HTTP {status} {response.text[:2000]}\n--- log ---\n{_log(capfd)}"
    )
    assert status == 200 or 400 <= status < 500, f"{where}: HTTP {status}"
    if provider in case.refused_by:
        assert 400 <= status < 500, f"{where}: expected a 4xx, got {status} {response.text[:500]}"
        assert upstream.calls(native.model) == 0, f"{where}: a refused request reached the provider"
    if status != 200:
        _assert_helpful(response.json(), where)
        return
    if not stream:
        assert response.json()["object"] == "chat.completion", f"{where}: {response.text[:500]}"
        return
    data = sse_data(response.content)
    if data and data[-1] == b"[DONE]":
        return
    event = json.loads(data[-1]) if data else None
    assert event is not None and "error" in event, f"{where}: a stream without an end"
    _assert_helpful(event, where)
    assert event["error"].get("code") != "internal_error", (
        f"{where}: the stream ended in the gateway's own failure {event}\n"
        f"--- log ---\n{_log(capfd)}"
    )
