"""Errors by cause (#15): who caused a failed upstream call decides what the client
sees and whether the deployment's health pays for it.

- The request's fault (upstream 400, 413, 422): the same status, the provider's
  message, no retry, no fallback, no cooldown.
- The deployment's configuration (401, 403, 404: the key, the model and the URL
  are the operator's): 502 `upstream_refused` without the provider's text, no
  retry of the same deployment, the fallback serves when there is one, and the
  deployment's health does not pay (only connect errors, timeouts, 429s, 5xx and
  unusable answers count).
- Skygate's own side (an ImportError, a translation bug): 500 `internal_error`,
  logged once with its traceback, never held against the deployment.

Each through the direct path and through litellm's real Anthropic translation,
against the fake upstream. Every breaker here opens on one counted failure
(`failures: 1`) and `direct`/`claude` fall back to `spare`: a failure wrongly
counted would send the next request to `spare-1`.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bench.fake_upstream import FakeUpstream
from core.llm.direct import DirectProvider
from core.llm.litellm_errors import provider_error
from core.llm.litellm_import import litellm_module
from core.llm.litellm_provider import LiteLLMProvider
from core.llm.types import Chunk, Completion, Deployment, Provider, ProviderError
from tests.support.contracts import assert_valid, sse_data
from tests.support.llm import LLMApp
from tests.support.requests import CHAT, chat

# route: (group with a fallback, its model, group without one, its model)
ROUTES = {
    "direct": ("direct", "direct-1", "solo", "solo-1"),
    "anthropic": ("claude", "claude-haiku-4-5", "claude-solo", "claude-solo-1"),
}
PROVIDER_SAYS = "prompt is too long: 210000 tokens > 200000 maximum"


def router_config(upstream: FakeUpstream, path: Path) -> str:
    path.write_text(
        textwrap.dedent(f"""\
            retry:
              attempts: 2
              backoff_seconds: 0.01
              max_backoff_seconds: 0.02
            cooldown:
              failures: 1
              seconds: 30
            providers:
              fake:
                kind: openai_compatible
                api_base: {upstream.base_url}
              anth:
                kind: anthropic
                api_base: {upstream.root_url}
                api_key_env: FAKE_ANTHROPIC_KEY
            model_groups:
              - {{name: direct, deployments: [{{provider: fake, model: direct-1}}]}}
              - {{name: solo, deployments: [{{provider: fake, model: solo-1}}]}}
              - {{name: claude, deployments: [{{provider: anth, model: claude-haiku-4-5}}]}}
              - {{name: claude-solo, deployments: [{{provider: anth, model: claude-solo-1}}]}}
              - {{name: spare, deployments: [{{provider: fake, model: spare-1}}]}}
            fallbacks:
              direct: [spare]
              claude: [spare]
            """)
    )
    return str(path)


@pytest.fixture
def app(llm_app: LLMApp, upstream: FakeUpstream, tmp_path: Path) -> Any:
    return llm_app(router_config=router_config(upstream, tmp_path / "router.yaml"))


def error_lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line[:1] == "{"]
    return [line for line in lines if line["level"] == "error"]


async def served_by(client: httpx.AsyncClient, group: str, text: str) -> str:
    """The deployment model that answers a fresh request to `group`."""
    response = await client.post(CHAT, json=chat(text, model=group))
    assert response.status_code == 200, response.text
    return response.headers["x-skygate-model"]


# -- the request's fault ---------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 413, 422])
@pytest.mark.parametrize("route", ROUTES)
async def test_a_request_error_is_the_clients_with_the_providers_message(
    app: Any, upstream: FakeUpstream, route: str, status: int
) -> None:
    group, model, _, _ = ROUTES[route]
    upstream.set_behaviour(model, "status", status=status, message=PROVIDER_SAYS)
    async with app as (_, client):
        response = await client.post(CHAT, json=chat(f"too long {status}", model=group))
        assert response.status_code == status, response.text
        assert_valid("ErrorResponse", response.json())
        error = response.json()["error"]
        assert error["message"] == PROVIDER_SAYS
        assert (error["type"], error["code"]) == ("invalid_request_error", "upstream_rejected")
        assert upstream.calls(model) == 1 and upstream.calls("spare-1") == 0  # no retry
        upstream.set_behaviour(model, "ok")
        assert await served_by(client, group, "a shorter one") == model  # no cooldown


@pytest.mark.parametrize("route", ROUTES)
async def test_a_stream_the_provider_rejects_is_a_400_before_any_byte(
    app: Any, upstream: FakeUpstream, route: str
) -> None:
    group, model, _, _ = ROUTES[route]
    upstream.set_behaviour(model, "status", status=400, message=PROVIDER_SAYS)
    async with app as (_, client):
        body = chat("too long, streamed", model=group, stream=True)
        response = await client.post(CHAT, json=body)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == PROVIDER_SAYS
        assert upstream.calls(model) == 1 and upstream.calls("spare-1") == 0


# -- the deployment's configuration ----------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 404])
@pytest.mark.parametrize("route", ROUTES)
async def test_a_refused_key_or_model_is_not_the_clients_fault(
    app: Any, upstream: FakeUpstream, route: str, status: int
) -> None:
    group, model, lone_group, lone_model = ROUTES[route]
    secret = "Incorrect API key provided: sk-pro********************1234"
    for name in (model, lone_model):
        upstream.set_behaviour(name, "status", status=status, message=secret)
    async with app as (_, client):
        # with a fallback: answered there, the refused deployment asked once, not retried
        assert await served_by(client, group, f"refused {status}") == "spare-1"
        assert upstream.calls(model) == 1
        # without one: a 502 that blames neither the request nor quotes the provider
        response = await client.post(CHAT, json=chat(f"refused {status}", model=lone_group))
        assert response.status_code == 502
        assert_valid("ErrorResponse", response.json())
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("upstream_error", "upstream_refused")
        assert f"status {status}" in error["message"] and "sk-pro" not in response.text
        assert upstream.calls(lone_model) == 1
        # and not held against the deployment's health: once the operator fixes the
        # key, the next request is its own again (a counted failure would open the
        # `failures: 1` breaker and send it to `spare-1`)
        upstream.reset()
        assert await served_by(client, group, f"fixed {status}") == model


# -- Skygate's own side ----------------------------------------------------------------


class MissingModule(DirectProvider):
    """The direct path with a module it needs gone missing (as `mcp` was for litellm)."""

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        raise ImportError("No module named 'tokenizer_extras'", name="tokenizer_extras")

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        raise ImportError("No module named 'tokenizer_extras'", name="tokenizer_extras")
        yield  # pragma: no cover (an async generator)


class TranslationBug(LiteLLMProvider):
    """litellm's real Anthropic translation handed a body it cannot translate (a bug
    on Skygate's side of the call): litellm raises TypeError, wrapped in its
    APIConnectionError with status 500, before anything is sent."""

    def _chat_kwargs(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        kwargs = super()._chat_kwargs(deployment, body)
        kwargs["messages"] = [{"role": "user", "content": 5}]
        return kwargs


def swap_provider(app: FastAPI, group: str, provider: Provider) -> Provider:
    """Serve `group` with `provider`; returns the one it replaces. (The router resolves
    each deployment's provider once, when it is built: its table is the only seam.)"""
    live = app.state.services.router._live[group][0]
    previous: Provider = live.provider
    live.provider = provider
    return previous


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("route", "broken", "cause"),
    [("direct", MissingModule, "ImportError"), ("anthropic", TranslationBug, "TypeError")],
    ids=["direct-import-error", "anthropic-translation-bug"],
)
async def test_a_local_failure_is_a_500_logged_once_and_not_the_deployments(
    app: Any,
    upstream: FakeUpstream,
    capfd: pytest.CaptureFixture[str],
    route: str,
    broken: type[Provider],
    cause: str,
    stream: bool,
) -> None:
    group, model, _, _ = ROUTES[route]
    async with app as (application, client):
        working = swap_provider(application, group, broken())
        capfd.readouterr()
        response = await client.post(CHAT, json=chat("tools, say", model=group, stream=stream))
        assert response.status_code == 500, response.text
        assert_valid("ErrorResponse", response.json())
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("api_error", "internal_error")
        assert cause not in response.text and "Traceback" not in response.text
        # not retried, no fallback, nothing sent upstream
        assert upstream.calls(model) == 0 and upstream.calls("spare-1") == 0
        logged = error_lines(capfd)
        assert [line["event"] for line in logged] == ["provider_failed_locally"]
        assert "Traceback" in logged[0]["exception"] and cause in logged[0]["exception"]
        # the breaker (one failure opens it) was not touched: the deployment still serves
        swap_provider(application, group, working)
        assert await served_by(client, group, "after the fix") == model


class BreaksMidStream(DirectProvider):
    """Streams the upstream's first chunk, then a bug on Skygate's side."""

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        async for chunk in super().stream(deployment, body):
            yield chunk
            raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")


async def test_a_local_failure_mid_stream_ends_it_with_an_error_event(
    app: Any, upstream: FakeUpstream, capfd: pytest.CaptureFixture[str]
) -> None:
    async with app as (application, client):
        broken = BreaksMidStream()
        working = swap_provider(application, "direct", broken)
        capfd.readouterr()
        body = chat("a few words to stream back", model="direct", stream=True)
        response = await client.post(CHAT, json=body)
        data = sse_data(response.content)
        assert b"[DONE]" not in data
        assert json.loads(data[-1])["error"]["code"] == "stream_interrupted"
        assert "TypeError" not in response.text
        logged = error_lines(capfd)
        assert [line["event"] for line in logged] == ["provider_failed_locally"]
        assert "TypeError" in logged[0]["exception"]
        swap_provider(application, "direct", working)
        await broken.close()  # its own connection pool: the router closes only its own
        assert await served_by(client, "direct", "after the fix") == "direct-1"


# -- litellm's exceptions, read by cause ------------------------------------------------


def anthropic(api_base: str) -> Deployment:
    return Deployment(
        id="claude/fake-anthropic/claude-haiku-4-5#0",
        group="claude",
        kind="anthropic",
        model="claude-haiku-4-5",
        api_base=api_base,
        api_key="fake-anthropic-key",
        timeout=0.5,
        transport="litellm",
    )


def test_an_import_error_litellm_wraps_as_a_connection_error_is_local() -> None:
    """What `No module named 'mcp'` looked like: litellm's own mapping (its real
    `exception_type`) turns it into APIConnectionError with status 500."""
    litellm = litellm_module()
    with pytest.raises(litellm.APIConnectionError) as caught:
        try:
            raise ModuleNotFoundError("No module named 'mcp'", name="mcp")
        except ModuleNotFoundError as missing:
            litellm.exception_type(
                model="anthropic/claude-haiku-4-5",
                original_exception=missing,
                custom_llm_provider="anthropic",
            )
    assert caught.value.status_code == 500
    deployment = anthropic("http://127.0.0.1:9")
    error = provider_error(caught.value, deployment)
    assert error.kind == "local" and "ModuleNotFoundError" in error.message
    assert not error.retryable and not error.client_fault


@pytest.mark.parametrize(
    ("behaviour", "kind", "status"),
    [
        ({"mode": "status", "status": 413}, "status", 413),  # litellm says 400
        ({"mode": "status", "status": 529}, "status", 529),  # litellm says 500
        ({"mode": "status", "status": 500}, "status", 500),
        ({"mode": "status", "status": 429, "retry_after": 7}, "status", 429),
        ({"mode": "hang"}, "timeout", None),
        ({"mode": "garbage"}, "garbage", None),
        (None, "connect", None),
    ],
    ids=["413", "529", "500", "429", "timeout", "garbage", "refused"],
)
async def test_litellm_failures_are_read_by_cause(
    upstream: FakeUpstream, behaviour: dict[str, Any] | None, kind: str, status: int | None
) -> None:
    if behaviour is None:
        deployment = anthropic("http://127.0.0.1:9")  # nothing listens there
    else:
        deployment = anthropic(upstream.root_url)
        upstream.set_behaviour(deployment.model, **behaviour)
    body = {"messages": [{"role": "user", "content": "hello"}]}
    with pytest.raises(ProviderError) as caught:
        await LiteLLMProvider().complete(deployment, body)
    error = caught.value
    assert (error.kind, error.status) == (kind, status), error.message
    assert error.client_fault is (status == 413)
    if status == 429:
        assert error.retry_after == 7
    if status is not None:
        assert error.message == "fake upstream: injected HTTP " + str(status)
