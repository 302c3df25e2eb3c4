"""Google Gemini, natively: chat, streaming and embeddings over the Gemini API
(`generateContent`, `streamGenerateContent?alt=sse`, `batchEmbedContents`), without
litellm, on the machinery of `core.llm.translated` (the key as `x-goog-api-key`).

Why native: with Anthropic and Cohere native already, Gemini was the last provider
that loaded litellm (about 1.8 s of start-up and 160 MiB a process); with it native no
built-in provider needs litellm, and a provider declared `translation: litellm` in the
router config still gets litellm's translation (docs/PERFORMANCE.md).

The translation itself is pure and lives beside this module: `core.llm.gemini_request`
(OpenAI's request -> Gemini's) and `core.llm.gemini_answer` (Gemini's answers and
stream events -> OpenAI's).

The base URL is the version root (`https://generativelanguage.googleapis.com/v1beta`,
`GOOGLE_AI_API_BASE`), as litellm took it; `/models/{model}:{method}` is added here.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from core.llm.gemini_answer import GeminiStream, completion, embeddings
from core.llm.gemini_request import (
    MAX_EMBED_TEXTS,
    chat_body,
    chat_path,
    embed_body,
    embed_path,
    embed_texts,
)
from core.llm.retry_after import parse_retry_after
from core.llm.translated import TranslatedProvider
from core.llm.types import Deployment
from core.llm.wire import TranslatedStream

CHARS_PER_TOKEN = 4  # `core.gateway.ledger`'s estimate, for Google's uncounted embeddings
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_DURATION = re.compile(r"^([0-9]{1,9}(?:\.[0-9]{1,9})?)s$")  # google.protobuf.Duration's JSON


def retry_delay(raw: bytes) -> float | None:
    """Seconds from the `google.rpc.RetryInfo` detail of a Google error body
    (`{"error": {"details": [{"@type": ".../RetryInfo", "retryDelay": "7s"}]}}`),
    where Gemini puts its retry hint (a 429 carries no `Retry-After`), or None."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO:
            delay = detail.get("retryDelay")
            match = _DURATION.match(delay) if isinstance(delay, str) else None
            if match is not None and math.isfinite(seconds := float(match.group(1))):
                return seconds
    return None


class GeminiProvider(TranslatedProvider):
    """Gemini's generateContent and batchEmbedContents, answered in OpenAI's shape."""

    end_event = "a finish reason"
    max_embed_texts = MAX_EMBED_TEXTS

    def _auth(self, deployment: Deployment) -> dict[str, str]:
        return {"x-goog-api-key": deployment.api_key} if deployment.api_key else {}

    def _retry_after(self, headers: Any, raw: bytes) -> float | None:
        hinted = parse_retry_after(headers)
        return hinted if hinted is not None else retry_delay(raw)

    def _chat(
        self, deployment: Deployment, body: dict[str, Any], *, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        return chat_path(deployment, stream=stream), chat_body(deployment, body, stream=stream)

    def _completion(
        self, deployment: Deployment, data: Any, body: dict[str, Any]
    ) -> dict[str, Any]:
        return completion(deployment, data)

    def _stream_state(self, deployment: Deployment, body: dict[str, Any]) -> TranslatedStream:
        return GeminiStream(deployment, choices=body.get("n") or 1)

    def _embed_texts(self, body: dict[str, Any]) -> list[str]:
        return embed_texts(body)

    def _embed_request(
        self, deployment: Deployment, texts: list[str], body: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        return embed_path(deployment), embed_body(deployment, texts, body)

    def _embeddings(
        self, deployment: Deployment, answers: list[tuple[int, Any]], body: dict[str, Any]
    ) -> dict[str, Any]:
        data = embeddings(deployment, answers, body.get("encoding_format"))
        # Google's answer counts no tokens; a zero would meter the call as free against
        # budgets and token limits, so the usage is estimated as the gateway estimates a
        # prompt it has not sent yet: about four characters a token.
        tokens = sum(-(-len(text) // CHARS_PER_TOKEN) for text in embed_texts(body))
        data["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return data
