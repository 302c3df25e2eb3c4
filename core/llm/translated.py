"""Providers whose protocol is not OpenAI's (Cohere, Anthropic), called natively on the
direct path's HTTP machinery (`core.llm.direct.DirectProvider`: one shared aiohttp
session per worker, an HTTP error status with the provider's message and
`Retry-After` as a `ProviderError` by cause).

A subclass names its endpoint and its pure translation (`_chat`, `_completion`,
`_stream_state`); the calls, the stream's event reading and its end are the same for
every such provider, and live here. Answers then pass `core.llm.wire` like every
provider's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from core.llm.direct import DirectProvider
from core.llm.types import Chunk, Completion, Deployment, ProviderError, Usage
from core.llm.wire import StreamShape, TranslatedStream, conform_completion


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
