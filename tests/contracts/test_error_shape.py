"""Every error Skygate builds has OpenAI's error shape (`ErrorResponse`), whether it
is rendered as an HTTP answer or sent as an event in a stream that already began.

First the whole error tree, then each error as a client meets it through the real
app: its status, a JSON body, and that body valid against OpenAI's schema.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bench.fake_upstream import FakeUpstream
from core.errors import GatewayError, error_body, error_for_status
from core.jobs.service import JobConflictError
from tests.support.app import AppFactory
from tests.support.auth import ADMIN, SECRET, bearer, create_key
from tests.support.contracts import assert_valid, sse_data
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat


def _tree(cls: type[GatewayError]) -> list[type[GatewayError]]:
    """The error tree of `core.errors` (subclasses elsewhere depend on what is imported)."""
    below = (sub for child in cls.__subclasses__() for sub in _tree(child))
    return [cls, *(sub for sub in below if sub.__module__ == "core.errors")]


@pytest.mark.parametrize("cls", _tree(GatewayError), ids=lambda cls: cls.__name__)
def test_every_error_of_the_tree_has_openais_shape(cls: type[GatewayError]) -> None:
    assert_valid("ErrorResponse", orjson.loads(error_body(cls(), "req_1")))
    detailed = cls("what went wrong", param="model", code="some_code")
    assert_valid("ErrorResponse", orjson.loads(error_body(detailed, None)))


def test_errors_outside_the_tree_module_have_openais_shape() -> None:
    conflict = JobConflictError("job_1")
    assert_valid("ErrorResponse", orjson.loads(error_body(conflict, "req_1")))


@pytest.mark.parametrize("status", [400, 409, 418, 451, 500, 501, 599])
def test_an_error_for_any_status_has_openais_shape(status: int) -> None:
    assert_valid("ErrorResponse", orjson.loads(error_body(error_for_status(status), "req_1")))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert_valid("ErrorResponse", body)
    if code is not None:
        assert body["error"]["code"] == code, body
    error: dict[str, Any] = body["error"]
    return error


# -- refused before any provider is asked --------------------------------------------------
async def test_request_errors_have_openais_shape(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    async with llm_app() as (_, client):
        invalid_json = await client.post(
            CHAT, content=b'{"model": "primary", ', headers={"Content-Type": "application/json"}
        )
        assert_error(invalid_json, 400, "invalid_json")
        forbidden = await client.post(CHAT, json=chat("hi", api_base="http://elsewhere"))
        assert assert_error(forbidden, 400, "forbidden_parameter")["param"] == "api_base"
        invalid = await client.post(CHAT, json=chat("hi", temperature=5))
        assert assert_error(invalid, 422, "validation_error")["param"] == "temperature"
        unknown = await client.post(CHAT, json=chat("hi", model="gpt-nope"))
        assert_error(unknown, 404, "model_not_found")
        unknown_embedding = await client.post(
            "/api/v1/embeddings", json={"model": "gpt-nope", "input": "x"}
        )
        assert_error(unknown_embedding, 404, "model_not_found")
        assert_error(await client.get("/api/v1/models/gpt-nope"), 404, "model_not_found")
        assert_error(await client.get("/api/v1/no-such-route"), 404)
        assert_error(await client.get(CHAT), 405, "method_not_allowed")
        assert upstream.total_calls == 0


async def test_oversized_body_has_openais_shape(app_factory: AppFactory) -> None:
    async with app_factory(max_request_body_bytes=1024) as (_, client):
        response = await client.post(CHAT, json=chat("x" * 4096, model="demo"))
        assert_error(response, 413, "request_too_large")


async def test_credential_and_limit_errors_have_openais_shape(llm_app: LLMApp) -> None:
    async with llm_app(admin_api_key=ADMIN, jwt_secret_key=SECRET) as (_, client):
        missing = await client.post(CHAT, json=chat("hi"))
        assert_error(missing, 401)
        wrong = await client.post(CHAT, json=chat("hi"), headers=bearer("sk-wrong-" + "k" * 32))
        assert assert_error(wrong, 401)["type"] == "authentication_error"

        narrow = (await create_key(client, allowed_models=["backup"]))["key"]
        refused = await client.post(CHAT, json=chat("hi"), headers=bearer(narrow))
        assert_error(refused, 403, "model_not_allowed")

        slow = (await create_key(client, rpm_limit=1))["key"]
        assert (await client.post(CHAT, json=chat("one"), headers=bearer(slow))).status_code == 200
        limited = await client.post(CHAT, json=chat("two"), headers=bearer(slow))
        assert assert_error(limited, 429)["type"] == "rate_limit_error"


# -- the provider failed ------------------------------------------------------------------
async def test_upstream_errors_have_openais_shape(llm_app: LLMApp, upstream: FakeUpstream) -> None:
    upstream.set_behaviour("solo-1", "status", status=500)
    upstream.set_behaviour("backup-1", "status", status=429, retry_after=30)
    upstream.set_behaviour("primary-1", "status", status=400, message="prompt is too long")
    upstream.set_behaviour("claude-haiku-4-5", "hang")
    async with llm_app(timeout=0.3, attempts=0, cooldown_failures=100) as (_, client):
        assert_error(await client.post(CHAT, json=chat("broken", model="solo")), 502)
        for stream in (False, True):  # a stream failing before its first byte: a real status
            limited = await client.post(CHAT, json=chat("limited", model="backup", stream=stream))
            assert_error(limited, 429, "upstream_rate_limited")
        rejected = await client.post(CHAT, json=chat("too long", model="primary"))
        assert "prompt is too long" in assert_error(rejected, 400)["message"]
        hung = await client.post(CHAT, json=chat("hang", model="claude", max_tokens=5))
        assert assert_error(hung, 504)["type"] == "timeout_error"


async def test_no_deployment_available_has_openais_shape(
    llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A group whose only deployment is at its requests-per-minute cap."""
    config = tmp_path / "capped.yaml"
    config.write_text(
        textwrap.dedent(f"""\
            retry:
              attempts: 0
            providers:
              fake:
                kind: openai_compatible
                api_base: {upstream.base_url}
            model_groups:
              - name: capped
                deployments:
                  - {{provider: fake, model: capped-1, rpm: 1}}
            """)
    )
    async with llm_app(router_config=str(config)) as (_, client):
        first = await client.post(CHAT, json=chat("one", model="capped"))
        assert first.status_code == 200, first.text
        second = await client.post(CHAT, json=chat("two", model="capped"))
        assert_error(second, 503, "no_deployment_available")


async def test_a_stream_cut_midway_ends_with_an_error_of_openais_shape(
    llm_app: LLMApp, upstream: FakeUpstream
) -> None:
    upstream.set_behaviour("solo-1", "cut", after_chunks=2)
    async with llm_app() as (_, client):
        response = await client.post(CHAT, json=chat("this will be cut", model="solo", stream=True))
        assert response.status_code == 200  # the stream had begun
        events = sse_data(response.content)
        assert events[-1] != b"[DONE]"
        for payload in events[:-1]:
            assert_valid("CreateChatCompletionStreamResponse", orjson.loads(payload))
        error = orjson.loads(events[-1])
        assert_valid("ErrorResponse", error)
        assert error["error"]["code"] == "stream_interrupted"
