"""Cohere, natively: chat, streaming and embeddings over Cohere's API v2, without
litellm, on the machinery of `core.llm.translated` (the deployment's key as
`Authorization: Bearer`).

Why native: litellm 1.x's Cohere v2 translation never read `finish_reason` (a tool
call answered `stop`), its stream parser lost streamed tool calls, the finish reason
and Cohere's usage, and it dropped `tool_choice`; none of that can be mended from
the arguments it is given. Native, a Cohere-only gateway also never imports litellm
(about 160 MiB per worker).

The translation itself is pure and lives beside this module: `core.llm.cohere_request`
(OpenAI's request -> Cohere's) and `core.llm.cohere_answer` (Cohere's answers and
stream events -> OpenAI's). Answers then pass `core.llm.wire` like every provider's.

The base URL is the host (`https://api.cohere.com`, `COHERE_API_BASE`); the
endpoint paths `/v2/chat` and `/v2/embed` are added here.
"""

from __future__ import annotations

from typing import Any

from core.llm.cohere_answer import CohereStream, completion, embeddings
from core.llm.cohere_request import (
    CHAT_PATH,
    EMBED_PATH,
    MAX_EMBED_TEXTS,
    chat_body,
    embed_body,
    embed_texts,
)
from core.llm.translated import TranslatedProvider
from core.llm.types import Deployment
from core.llm.wire import TranslatedStream


class CohereProvider(TranslatedProvider):
    """Cohere's Chat v2 and Embed v2, answered in OpenAI's shape."""

    end_event = "message-end"

    def _chat(
        self, deployment: Deployment, body: dict[str, Any], *, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        return CHAT_PATH, chat_body(deployment, body, stream=stream)

    def _completion(
        self, deployment: Deployment, data: Any, body: dict[str, Any]
    ) -> dict[str, Any]:
        return completion(deployment, data)

    def _stream_state(self, deployment: Deployment, body: dict[str, Any]) -> TranslatedStream:
        return CohereStream(deployment)

    max_embed_texts = MAX_EMBED_TEXTS

    def _embed_texts(self, body: dict[str, Any]) -> list[str]:
        return embed_texts(body)

    def _embed_request(
        self, deployment: Deployment, texts: list[str], body: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        return EMBED_PATH, embed_body(deployment, texts, body)

    def _embeddings(
        self, deployment: Deployment, answers: list[tuple[int, Any]], body: dict[str, Any]
    ) -> dict[str, Any]:
        return embeddings(deployment, answers, body.get("encoding_format"))
