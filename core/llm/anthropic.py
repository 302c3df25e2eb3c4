"""Anthropic, natively: chat and streaming over the Messages API, without litellm, on
the machinery of `core.llm.translated` (the key as `x-api-key`, with the
`anthropic-version` header).

Why native: litellm's import costs about 1.8 s of start-up and 160 MiB per process,
and the seeds configure OpenAI and Anthropic only, so with Anthropic native the
seeds' gateway never loads litellm (docs/PERFORMANCE.md has the measurements).

The translation itself is pure and lives beside this module: `core.llm.anthropic_request`
(OpenAI's request -> Anthropic's) and `core.llm.anthropic_answer` (Anthropic's answers
and stream events -> OpenAI's).

The base URL is the host (`https://api.anthropic.com`, `ANTHROPIC_API_BASE`), as the
Anthropic SDKs take it; one that already ends in `/v1` or `/v1/messages` (as litellm's
`api_base` may) is taken as it is. OpenAI's JSON `response_format` is a forced tool
whose input is the answer (`anthropic_request.json_tool`). Anthropic has no embeddings
API: an embeddings request to an Anthropic group is the client's 400.
"""

from __future__ import annotations

from typing import Any

from core.llm.anthropic_answer import AnthropicStream, completion
from core.llm.anthropic_request import (
    API_VERSION,
    MESSAGES_PATH,
    chat_body,
    json_tool,
    rejected,
)
from core.llm.translated import TranslatedProvider
from core.llm.types import Completion, Deployment
from core.llm.wire import TranslatedStream


def messages_path(api_base: str | None) -> str:
    """The Messages endpoint's path below `api_base`."""
    base = (api_base or "").rstrip("/")
    if base.endswith(MESSAGES_PATH):
        return ""
    if base.endswith("/v1"):
        return MESSAGES_PATH.removeprefix("/v1")
    return MESSAGES_PATH


class AnthropicProvider(TranslatedProvider):
    """Anthropic's Messages API, answered in OpenAI's shape."""

    end_event = "message_stop"

    def _auth(self, deployment: Deployment) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if deployment.api_key:
            headers["x-api-key"] = deployment.api_key
        return headers

    def _chat(
        self, deployment: Deployment, body: dict[str, Any], *, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        return messages_path(deployment.api_base), chat_body(deployment, body, stream=stream)

    def _completion(
        self, deployment: Deployment, data: Any, body: dict[str, Any]
    ) -> dict[str, Any]:
        return completion(deployment, data, json_tool=json_tool(body))

    def _stream_state(self, deployment: Deployment, body: dict[str, Any]) -> TranslatedStream:
        return AnthropicStream(deployment, json_tool=json_tool(body))

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        raise rejected(
            f"Model group {deployment.group!r} is served by Anthropic, which has no "
            "embeddings API; use a group of an embeddings model."
        )
