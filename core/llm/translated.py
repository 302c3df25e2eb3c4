"""Providers whose protocol is not OpenAI's (Cohere, Anthropic), called natively on the
direct path's HTTP machinery (`core.llm.direct.DirectProvider`: one shared aiohttp
session per worker, an HTTP error status with the provider's message and
`Retry-After` as a `ProviderError` by cause).

A subclass names its endpoints and its pure translation (`_chat`, `_completion`,
`_stream_state`; for embeddings `_embed_texts`, `_embed_request`, `_embeddings` and
`max_embed_texts`); the calls, the stream's event reading and its end, and the
embedding batches are the same for every such provider, and live here. Answers then
pass `core.llm.wire` like every provider's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from core.llm.direct import DirectProvider
from core.llm.types import Chunk, Completion, Deployment, ProviderError, Usage
from core.llm.wire import StreamShape, TranslatedStream, conform_completion, conform_embeddings


class TranslatedProvider(DirectProvider):
    """Chat and streaming through a provider's own API, answered in OpenAI's shape."""

    # The event that ends a stream, named when a stream stops without it.
    end_event = "its end event"

    def _chat(
        self, deployment: Deployment, body: dict[str, Any], *, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        """(path below the deployment's base URL, the provider's request) for a chat."""
        raise NotImplementedError

    def _completion(
        self, deployment: Deployment, data: Any, body: dict[str, Any]
    ) -> dict[str, Any]:
        """The `chat.completion` for the provider's answer to `body`."""
        raise NotImplementedError

    def _stream_state(self, deployment: Deployment, body: dict[str, Any]) -> TranslatedStream:
        raise NotImplementedError

    # Texts the provider embeds per call (OpenAI takes 2048 inputs in one).
    max_embed_texts = 1

    def _embed_texts(self, body: dict[str, Any]) -> list[str]:
        """The texts of an OpenAI embeddings `body`."""
        raise NotImplementedError

    def _embed_request(
        self, deployment: Deployment, texts: list[str], body: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """(path, the provider's request) embedding one batch of `texts`."""
        raise NotImplementedError

    def _embeddings(
        self, deployment: Deployment, answers: list[tuple[int, Any]], body: dict[str, Any]
    ) -> dict[str, Any]:
        """OpenAI's embeddings list from the answers, one per batch: (texts sent, answer)."""
        raise NotImplementedError

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        path, native = self._chat(deployment, body, stream=False)
        _, data = await self._fetch_json(deployment, path, native)
        answer = self._completion(deployment, data, body)
        conform_completion(answer)
        return Completion(orjson.dumps(answer), answer, Usage.from_openai(answer.get("usage")))

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        path, native = self._chat(deployment, body, stream=True)
        response = await self._open_stream(deployment, path, native, accept="text/event-stream")
        state = self._stream_state(deployment, body)
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
                raise ProviderError(
                    "cut", f"{deployment.id} ended the stream without {self.end_event}"
                )
            await self._drain(deployment, response)
        last = shape.last()
        if last is not None:
            yield last

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        texts = self._embed_texts(body)
        size = self.max_embed_texts
        batches = [texts[start : start + size] for start in range(0, len(texts), size)]
        if len(batches) == 1:
            answers = [(len(texts), await self._embed_batch(deployment, texts, body))]
        else:  # more than one call takes: the batches at once
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [
                        group.create_task(self._embed_batch(deployment, batch, body))
                        for batch in batches
                    ]
            except* ProviderError as failed:  # the first failure, as any call's
                raise failed.exceptions[0] from None
            answers = [(len(b), t.result()) for b, t in zip(batches, tasks, strict=True)]
        data = self._embeddings(deployment, answers, body)
        conform_embeddings(data)
        return Completion(orjson.dumps(data), data, Usage.from_openai(data["usage"]))

    async def _embed_batch(
        self, deployment: Deployment, texts: list[str], body: dict[str, Any]
    ) -> Any:
        path, native = self._embed_request(deployment, texts, body)
        _, data = await self._fetch_json(deployment, path, native)
        return data

    @staticmethod
    async def _events(
        deployment: Deployment, response: aiohttp.ClientResponse
    ) -> AsyncIterator[dict[str, Any]]:
        """The stream's events, parsed. SSE `data:` lines (what `Accept:
        text/event-stream` gets; `event:` lines are skipped, every provider here repeats
        the event's type in its data); a line that is a JSON object is taken too
        (Cohere's other framing, `application/stream+json`). `[DONE]` ends it, like the
        end of the body."""
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
        """Read what follows the end event (the body's end, or a `[DONE]`), so the
        connection goes back to the pool instead of being closed; the answer is
        complete already, so nothing here fails it."""
        try:
            async with asyncio.timeout(min(deployment.timeout, 5.0)):
                while await response.content.readany():
                    pass
        except (TimeoutError, aiohttp.ClientError):
            pass
