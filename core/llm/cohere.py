"""Cohere, natively: chat, streaming and embeddings over Cohere's API v2, without
litellm, on the direct path's HTTP machinery (`core.llm.direct.DirectProvider`: one
shared aiohttp session per worker, the deployment's key as `Authorization: Bearer`,
an HTTP error status with the provider's message and `Retry-After` as a
`ProviderError` by cause).

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

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from core.llm.cohere_answer import CohereStream, completion, embeddings
from core.llm.cohere_request import (
    CHAT_PATH,
    EMBED_PATH,
    MAX_EMBED_TEXTS,
    chat_body,
    embed_body,
    embed_texts,
)
from core.llm.direct import DirectProvider
from core.llm.types import Chunk, Completion, Deployment, ProviderError, Usage
from core.llm.wire import StreamShape, conform_completion, conform_embeddings


class CohereProvider(DirectProvider):
    """Cohere's Chat v2 and Embed v2, answered in OpenAI's shape."""

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        native = chat_body(deployment, body, stream=False)
        _, data = await self._fetch_json(deployment, CHAT_PATH, native)
        answer = completion(deployment, data)
        conform_completion(answer)
        return Completion(orjson.dumps(answer), answer, Usage.from_openai(answer.get("usage")))

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        native = chat_body(deployment, body, stream=True)
        response = await self._open_stream(
            deployment, CHAT_PATH, native, accept="text/event-stream"
        )
        state = CohereStream(deployment)
        shape = StreamShape()
        async with response:
            try:
                async for event in self._events(deployment, response):
                    for data in state.chunks(event):
                        shaped = shape.chunk(None, data)
                        if shaped is not None:
                            yield shaped
                    if state.finished:
                        break
            except TimeoutError as exc:
                raise ProviderError("timeout", f"{deployment.id} stalled mid-stream") from exc
            except aiohttp.ClientError as exc:
                raise ProviderError("cut", f"{deployment.id} cut the stream: {exc}") from exc
            if not state.finished:
                raise ProviderError("cut", f"{deployment.id} ended the stream without message-end")
            await self._drain(deployment, response)
        last = shape.last()
        if last is not None:
            yield last

    @staticmethod
    async def _events(
        deployment: Deployment, response: aiohttp.ClientResponse
    ) -> AsyncIterator[dict[str, Any]]:
        """The stream's events, parsed. SSE `data:` lines (what `Accept:
        text/event-stream` gets); a line that is a JSON object is taken too, Cohere's
        other framing (`application/stream+json`). `[DONE]` ends it, like the end of
        the body."""
        while True:
            async with asyncio.timeout(deployment.timeout):
                line = await response.content.readline()
            if not line:
                return
            line = line.strip()
            if line.startswith(b"data:"):
                line = line[5:].strip()
            elif not line.startswith(b"{"):
                continue  # blank separators, `event:` lines, comments
            if line == b"[DONE]":
                return
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ProviderError("garbage", f"{deployment.id} sent invalid JSON") from exc
            if not isinstance(event, dict):
                raise ProviderError("garbage", f"{deployment.id} sent an unexpected event")
            yield event

    @staticmethod
    async def _drain(deployment: Deployment, response: aiohttp.ClientResponse) -> None:
        """Read what follows `message-end` (the body's end, or a `[DONE]`), so the
        connection goes back to the pool instead of being closed; the answer is
        complete already, so nothing here fails it."""
        try:
            async with asyncio.timeout(min(deployment.timeout, 5.0)):
                while await response.content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError):
            pass

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        texts = embed_texts(body)
        batches = [
            texts[start : start + MAX_EMBED_TEXTS]
            for start in range(0, len(texts), MAX_EMBED_TEXTS)
        ]
        if len(batches) == 1:
            answers = [(len(texts), await self._embed_batch(deployment, texts, body))]
        else:  # OpenAI takes 2048 inputs, Cohere 96 a call: the batches at once
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [
                        group.create_task(self._embed_batch(deployment, batch, body))
                        for batch in batches
                    ]
            except* ProviderError as failed:  # the first failure, as any call's
                raise failed.exceptions[0] from None
            answers = [(len(b), t.result()) for b, t in zip(batches, tasks, strict=True)]
        data = embeddings(deployment, answers, body.get("encoding_format"))
        conform_embeddings(data)
        return Completion(orjson.dumps(data), data, Usage.from_openai(data["usage"]))

    async def _embed_batch(
        self, deployment: Deployment, texts: list[str], body: dict[str, Any]
    ) -> Any:
        _, data = await self._fetch_json(
            deployment, EMBED_PATH, embed_body(deployment, texts, body)
        )
        return data
