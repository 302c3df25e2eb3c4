"""Finding 7: an unusual provider `Retry-After` was a 500.

`Retry-After: 30s` raised ValueError out of the direct path (HTTP 500
`internal_error`, no retry, no fallback), and `inf` reached `round(inf)`. Every
form now parses safely: garbage is ignored and the normal retry and fallback
happen, on the direct (OpenAI-compatible) path, the translated (Anthropic) one and
litellm's.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bench.fake_upstream import FakeUpstream
from core.llm.failures import to_gateway_error
from core.llm.retry_after import MAX_RETRY_AFTER_SECONDS, parse_retry_after, retry_after_header
from core.llm.router import NoDeploymentAvailable
from core.llm.types import ProviderError
from tests.support.app import make_settings, running_app
from tests.support.llm import LITELLM_CLAUDE, router_yaml

CHAT = "/api/v1/chat/completions"
App = Callable[[], AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


def http_date(offset: float) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


# What providers (or something in front of them) have been seen to send, and worse.
GARBAGE = [
    "30s",
    "inf",
    "-inf",
    "-5",
    "nan",
    "1e309",
    "1e3",
    "",
    "   ",
    "soon",
    "1.5.2",
    "0x1F",
    "+30",
    "30, 40",
    "\xff\xfe garbage",
    "bell\x07 and del\x7f",  # control bytes: aiohttp may refuse the whole response
    "Mon, 32 Foo 99999 99:99:99 GMT",
]
# (value, attempts on the failing deployment): with `attempts: 1` and
# `max_retry_after_seconds: 1`, an ignored or short hint means a retry after the
# usual backoff (2), a long one "move on to the fallback now" (1).
ODD_VALUES = [
    *((value, 2) for value in GARBAGE),
    ("99999999999999999999", 1),  # capped: still far past max_retry_after_seconds
    (http_date(3600), 1),  # an hour
    (http_date(-3600), 2),  # in the past: retry at once
    (http_date(0.2), 2),  # soon: waited for, then the retry fails too
]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "30"}, 30.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": " 7 "}, 7.0),
        ({"retry-after-ms": "1500", "retry-after": "30"}, 1.5),
        ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "-1", "retry-after": "x"}, None),
        ({"retry-after": "99999999999999999999"}, MAX_RETRY_AFTER_SECONDS),
        ({"retry-after": http_date(-60)}, 0.0),
        ({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}, MAX_RETRY_AFTER_SECONDS),
        ({"retry-after": b"12"}, 12.0),
        ({"retry-after": 12}, None),  # not a header value
        ({}, None),
        (None, None),
        ({"retry-after": "٣"}, None),  # a digit, but not an ASCII one
        *(({"retry-after": value}, None) for value in GARBAGE),
    ],
)
def test_every_form_parses_without_raising(headers: Any, seconds: float | None) -> None:
    assert parse_retry_after(headers) == seconds


def test_a_future_date_is_the_seconds_until_then() -> None:
    seconds = parse_retry_after({"retry-after": http_date(120)})
    assert seconds is not None and 115 <= seconds <= 121


@pytest.mark.parametrize(
    "hint", [None, 0.0, 0.4, 1.0, 29.2, math.inf, -math.inf, math.nan, -3.0, 1e300]
)
def test_the_client_error_never_raises_and_its_header_is_whole_seconds(
    hint: float | None,
) -> None:
    for error in (
        ProviderError("status", "slow down", status=429, retry_after=hint),
        NoDeploymentAvailable(hint if hint is not None else 1.0),
    ):
        rendered = to_gateway_error(error)
        assert rendered.status_code in (429, 503)
        value = rendered.headers.get("Retry-After")
        if value is not None:
            assert value.isdigit() and 1 <= int(value) <= MAX_RETRY_AFTER_SECONDS
    assert retry_after_header(29.2) == {"Retry-After": "30"}  # rounded up, never early


@pytest.fixture
def app(
    upstream: FakeUpstream, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> App:
    """`primary` (direct), `claude` (Anthropic) and `claude-litellm` (Anthropic through
    litellm) all fall back to `backup`; the breakers never open, so every request
    walks the failing deployment first."""
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "fake-anthropic-key")
    config = router_yaml(
        upstream, attempts=1, cooldown_failures=100, max_retry_after=1.0, litellm=True
    )
    path = tmp_path / "router.yaml"
    path.write_text(
        config.replace(
            "  primary: [backup]\n",
            "  primary: [backup]\n  claude: [backup]\n  claude-litellm: [backup]\n",
        )
    )

    def factory() -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
        settings = make_settings(router_config=str(path), database_url=sqlite_url)
        return running_app(settings)

    return factory


@pytest.mark.parametrize(
    ("group", "failing"),
    [
        ("primary", "primary-1"),
        ("claude", "claude-haiku-4-5"),
        ("claude-litellm", LITELLM_CLAUDE),
    ],
    ids=["direct", "anthropic", "anthropic-litellm"],
)
@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_odd_retry_after_values_retry_and_fall_back(
    app: App, upstream: FakeUpstream, group: str, failing: str, status: int, stream: bool
) -> None:
    async with app() as (_, client):
        for value, expected_tries in ODD_VALUES:
            upstream.set_behaviour(failing, "status", status=status, retry_after=value)
            failed, answered = upstream.calls(failing), upstream.calls("backup-1")
            body = {
                "model": group,
                "messages": [{"role": "user", "content": f"retry after {value!r}"}],
                "stream": stream,
            }
            response = await client.post(CHAT, json=body)
            assert response.status_code == 200, (value, response.text)
            assert upstream.calls("backup-1") == answered + 1, value
            assert upstream.calls(failing) - failed == expected_tries, value


async def test_with_no_fallback_the_client_gets_a_clean_429(
    app: App, upstream: FakeUpstream
) -> None:
    async with app() as (_, client):
        for value, _ in ODD_VALUES:
            upstream.set_behaviour("solo-1", "status", status=429, retry_after=value)
            body = {"model": "solo", "messages": [{"role": "user", "content": "x"}]}
            response = await client.post(CHAT, json=body)
            if response.status_code == 502 and any(ord(c) < 32 or ord(c) == 127 for c in value):
                continue  # the HTTP client refused the provider's response: a bad gateway
            assert response.status_code == 429, (value, response.text)
            assert response.json()["error"]["code"] == "upstream_rate_limited"
            header = response.headers.get("retry-after")
            assert header is None or (header.isdigit() and int(header) >= 1), (value, header)
