"""Fixtures for LLM tests: a fake upstream (a real HTTP server) and router
configs that point Skygate's deployments at it."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bench.fake_upstream import FakeUpstream
from tests.support.app import make_settings, running_app

PRICED_MODEL = "gpt-4o-mini"  # in litellm's bundled cost map: $0.15 / $0.60 per million

LLMApp = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


LITELLM_CLAUDE = "claude-sonnet-4-5"  # `claude-litellm`'s model (the fake counts calls by model)


def router_yaml(
    upstream: FakeUpstream,
    *,
    timeout: float = 2.0,
    attempts: int = 1,
    cooldown_failures: int = 2,
    cooldown_seconds: float = 1.0,
    max_retry_after: float = 1.0,
    litellm: bool = False,
) -> str:
    """Groups `primary` (alias `fast`) -> fallback `backup`, `solo` (no fallback),
    `claude` (Anthropic) and `embed`, all served by the fake; with `litellm`, also
    `claude-litellm` (Anthropic through litellm's translation, `translation: litellm`)."""
    extra = (
        "  - name: claude-litellm\n    deployments:\n"
        f"      - {{provider: fake-anthropic-litellm, model: {LITELLM_CLAUDE}, "
        f"timeout_seconds: {timeout}}}\n"
        if litellm
        else ""
    )
    return (
        textwrap.dedent(f"""\
        retry:
          attempts: {attempts}
          backoff_seconds: 0.01
          max_backoff_seconds: 0.05
          max_retry_after_seconds: {max_retry_after}
        cooldown:
          failures: {cooldown_failures}
          seconds: {cooldown_seconds}
        providers:
          fake:
            kind: openai_compatible
            api_base: {upstream.base_url}
          fake-anthropic:
            kind: anthropic
            api_base: {upstream.root_url}
            api_key_env: FAKE_ANTHROPIC_KEY
          fake-anthropic-litellm:
            kind: anthropic
            api_base: {upstream.root_url}
            api_key_env: FAKE_ANTHROPIC_KEY
            translation: litellm
        fallbacks:
          primary: [backup]
        model_groups:
          - name: primary
            aliases: [fast]
            deployments:
              - {{provider: fake, model: primary-1, timeout_seconds: {timeout}}}
          - name: backup
            deployments:
              - {{provider: fake, model: backup-1, timeout_seconds: {timeout}}}
          - name: solo
            deployments:
              - {{provider: fake, model: solo-1, timeout_seconds: {timeout}}}
          - name: claude
            deployments:
              - {{provider: fake-anthropic, model: claude-haiku-4-5, timeout_seconds: {timeout}}}
          - name: embed
            deployments:
              - {{provider: fake, model: embed-1}}
        """)
        + extra
    )


def priced_router(upstream: FakeUpstream, path: Path, *, timeout: float = 30) -> str:
    """One group, `metered`, on an `openai` deployment of a priced model served by the fake."""
    path.write_text(
        textwrap.dedent(f"""\
            retry:
              attempts: 0
            cooldown:
              failures: 100
              seconds: 1
            providers:
              fake-openai:
                kind: openai
                api_base: {upstream.base_url}
                api_key_env: FAKE_OPENAI_KEY
            model_groups:
              - name: metered
                deployments:
                  - {{provider: fake-openai, model: {PRICED_MODEL}, timeout_seconds: {timeout}}}
            """)
    )
    return str(path)


@pytest.fixture
def llm_app(
    upstream: FakeUpstream, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> LLMApp:
    """Build and run an app routed to the fake upstream (options go to `router_yaml`
    or, for known setting names, to Settings; a `router_config` replaces the YAML)."""
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "fake-anthropic-key")
    monkeypatch.setenv("FAKE_OPENAI_KEY", "fake-openai-key")  # for `priced_router`

    def factory(**options: Any) -> AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]:
        yaml_options = {
            k: options.pop(k)
            for k in list(options)
            if k
            in {
                "timeout",
                "attempts",
                "cooldown_failures",
                "cooldown_seconds",
                "max_retry_after",
                "litellm",
            }
        }
        if "router_config" not in options:
            path = tmp_path / "router.yaml"
            path.write_text(router_yaml(upstream, **yaml_options))
            options["router_config"] = str(path)
        options.setdefault("database_url", sqlite_url)
        options.setdefault("usage_flush_seconds", 0.1)
        return running_app(make_settings(**options))

    return factory
