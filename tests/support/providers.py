"""One gateway with a model group per provider wire format, all served by one fake
upstream (`bench.fake_upstream` with `bench.fake_gemini` and `bench.fake_cohere`), and
what each provider's request looks like natively, for tests that assert what reached it.

Groups: `anthropic` (Messages API), `gemini` (generateContent) and `cohere` (Chat v2),
each translated natively (`core.llm.anthropic`, `core.llm.gemini`, `core.llm.cohere`),
and `openai` (an OpenAI-compatible server on the direct path, for parity); embeddings:
`gemini-embed`, `cohere-embed`, `openai-embed`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.app import NO_RETRIES

KEYS = {
    "FAKE_ANTHROPIC_KEY": "fake-anthropic-key",
    "FAKE_GOOGLE_KEY": "fake-google-key",
    "FAKE_COHERE_KEY": "fake-cohere-key",
}


def provider_router_yaml(upstream: FakeUpstream) -> str:
    """Every provider kind's deployment pointed at `upstream` (its base URLs as the real
    services have them: Gemini's includes the API version, Cohere's is the host)."""
    root = upstream.root_url
    return NO_RETRIES + textwrap.dedent(f"""\
        providers:
          fake-anthropic: {{kind: anthropic, api_base: "{root}", api_key_env: FAKE_ANTHROPIC_KEY}}
          fake-google: {{kind: google, api_base: "{root}/v1beta", api_key_env: FAKE_GOOGLE_KEY}}
          fake-cohere: {{kind: cohere, api_base: "{root}", api_key_env: FAKE_COHERE_KEY}}
          fake-openai: {{kind: openai_compatible, api_base: "{root}/v1"}}
        model_groups:
          - name: anthropic
            deployments: [{{provider: fake-anthropic, model: claude-haiku-4-5}}]
          - name: gemini
            deployments: [{{provider: fake-google, model: gemini-2.5-flash}}]
          - name: cohere
            deployments: [{{provider: fake-cohere, model: command-r-08-2024}}]
          - name: openai
            deployments: [{{provider: fake-openai, model: gpt-fake}}]
          - name: gemini-embed
            deployments: [{{provider: fake-google, model: text-embedding-004}}]
          - name: cohere-embed
            deployments: [{{provider: fake-cohere, model: embed-english-v3.0}}]
          - name: openai-embed
            deployments: [{{provider: fake-openai, model: embed-fake}}]
        """)


def set_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


@dataclass(frozen=True, slots=True)
class Native:
    """How one provider's request carries tools, in its own format."""

    group: str
    model: str  # the upstream model name (`FakeUpstream.last_request` key)
    path: str  # the chat endpoint's path on the upstream
    translated: bool  # Skygate translates it (False: the direct path forwards the body)

    def functions(self, body: dict[str, Any]) -> list[str]:
        """Names of the functions offered."""
        if self.group == "anthropic":
            return [tool["name"] for tool in body.get("tools", ())]
        if self.group == "gemini":
            return [
                declaration["name"]
                for tool in body.get("tools", ())
                for declaration in tool.get("function_declarations")
                or tool.get("functionDeclarations", ())
            ]
        return [tool["function"]["name"] for tool in body.get("tools", ())]

    def tool_choice(self, body: dict[str, Any]) -> Any:
        """The tool choice as sent (Gemini's config with snake_case names)."""
        if self.group != "gemini":
            return body.get("tool_choice")
        config = body.get("toolConfig") or body.get("tool_config") or {}
        calling = config.get("functionCallingConfig") or config.get("function_calling_config")
        if calling is None:
            return None
        renamed = {"allowedFunctionNames": "allowed_function_names"}
        return {renamed.get(k, k): v for k, v in calling.items()}

    def tool_results(self, body: dict[str, Any]) -> list[tuple[str, str]]:
        """(call id, or the function's name for Gemini, which has no ids; result text)
        of the tool results in the request, in order."""
        if self.group == "anthropic":
            return [
                (block["tool_use_id"], _text(block["content"]))
                for message in body["messages"]
                if isinstance(message["content"], list)
                for block in message["content"]
                if block.get("type") == "tool_result"
            ]
        if self.group == "gemini":
            found = []
            for content in body["contents"]:
                for part in content["parts"]:
                    response = part.get("function_response") or part.get("functionResponse")
                    if response is not None:
                        found.append((response["name"], _text(response["response"])))
            return found
        return [
            (message["tool_call_id"], _text(message["content"]))
            for message in body["messages"]
            if message["role"] == "tool"
        ]


def _text(value: Any) -> str:
    """A tool result's text however it was wrapped (a string, text blocks, a JSON object
    holding one string)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text(item.get("text", item)) for item in value)
    if isinstance(value, dict) and len(value) == 1:
        return _text(next(iter(value.values())))
    return str(value)


NATIVE = {
    "anthropic": Native("anthropic", "claude-haiku-4-5", "/v1/messages", translated=True),
    "gemini": Native(
        "gemini",
        "gemini-2.5-flash",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        translated=True,
    ),
    "cohere": Native("cohere", "command-r-08-2024", "/v2/chat", translated=True),
    "openai": Native("openai", "gpt-fake", "/v1/chat/completions", translated=False),
}
