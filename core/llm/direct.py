"""The fast path: OpenAI-compatible upstreams (OpenAI, Groq, Mistral, vLLM, Ollama,
LM Studio) called directly over one shared aiohttp session per worker.

A `litellm.acompletion()` call costs about 4 ms of CPU; forwarding the request
ourselves costs a fraction of that. The upstream's answer bytes are passed
through untouched (non-streaming) or event by event (streaming), so clients
get exactly what an OpenAI-compatible server sends. Usage is always requested
upstream (`stream_options.include_usage`) for accounting; the usage-only chunk
is dropped later if the client did not ask for it.

The request body sent upstream holds only the names of `core.gateway.schemas`'
allow-list for its endpoint (a copy, so even a caller that skipped validation
cannot forward anything else); destination and key are the deployment's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from core.llm.parameters import CHAT_PARAMETERS, EMBEDDING_PARAMETERS
from core.llm.retry_after import parse_retry_after
from core.llm.types import Chunk, Completion, Deployment, ProviderError, Usage

MAX_ERROR_BODY = 2000


def upstream_message(raw: bytes) -> str:
    """The provider's error message, if its body carries one (never the whole body)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))[:MAX_ERROR_BODY]
    if isinstance(error, str):
        return error[:MAX_ERROR_BODY]
    return ""


def _only(body: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """A copy of `body` with the allowed names only (about a microsecond)."""
    return {name: value for name, value in body.items() if name in allowed}


class DirectProvider:
    """OpenAI wire protocol over aiohttp, for every OpenAI-compatible deployment."""

    def __init__(self, *, connections: int = 1000) -> None:
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.connections, ttl_dns_cache=300, keepalive_timeout=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                skip_auto_headers=("User-Agent",),
                headers={"User-Agent": "skygate"},
            )
        return self._session

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        return headers

    async def _post(
        self, deployment: Deployment, path: str, body: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        url = f"{deployment.api_base}{path}"
        try:
            response = await self.session.post(
                url, data=orjson.dumps(body), headers=self._headers(deployment)
            )
        except aiohttp.ClientConnectionError as exc:
            raise ProviderError("connect", f"cannot reach {deployment.id}: {exc}") from exc
        if response.status >= 400:
            try:
                raw = await response.content.read(MAX_ERROR_BODY * 4)
            except aiohttp.ClientError:
                raw = b""
            response.release()
            raise ProviderError(
                "status",
                upstream_message(raw) or f"{deployment.id} answered {response.status}",
                status=response.status,
                retry_after=parse_retry_after(response.headers),
            )
        return response

    async def _read_json(
        self, deployment: Deployment, path: str, body: dict[str, Any], expect: str
    ) -> Completion:
        try:
            async with asyncio.timeout(deployment.timeout):
                response = await self._post(deployment, path, body)
                async with response:
                    raw = await response.read()
        except TimeoutError as exc:
            raise ProviderError("timeout", f"{deployment.id} timed out") from exc
        except aiohttp.ClientPayloadError as exc:
            raise ProviderError("cut", f"{deployment.id} cut its answer short") from exc
        except aiohttp.ClientError as exc:
            raise ProviderError("connect", f"{deployment.id} failed: {exc}") from exc
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProviderError("garbage", f"{deployment.id} answered with invalid JSON") from exc
        if not isinstance(data, dict) or not isinstance(data.get(expect), list):
            raise ProviderError("garbage", f"{deployment.id} answered with an unexpected shape")
        return Completion(raw, data, Usage.from_openai(data.get("usage")))

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        return await self._read_json(
            deployment, "/chat/completions", _only(body, CHAT_PARAMETERS), "choices"
        )

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        return await self._read_json(
            deployment, "/embeddings", _only(body, EMBEDDING_PARAMETERS), "data"
        )

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        body = _only(body, CHAT_PARAMETERS)
        body.update(stream=True, stream_options={"include_usage": True})
        try:
            async with asyncio.timeout(deployment.timeout):
                response = await self._post(deployment, "/chat/completions", body)
        except TimeoutError as exc:
            raise ProviderError("timeout", f"{deployment.id} timed out") from exc
        async with response:
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                raise ProviderError("garbage", f"{deployment.id} did not answer with a stream")
            done = False
            try:
                while True:
                    async with asyncio.timeout(deployment.timeout):
                        line = await response.content.readline()
                    if not line:
                        break
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments, `event:` lines
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    try:
                        data = orjson.loads(payload)
                    except orjson.JSONDecodeError as exc:
                        raise ProviderError(
                            "garbage", f"{deployment.id} sent invalid JSON"
                        ) from exc
                    if not isinstance(data, dict):
                        raise ProviderError("garbage", f"{deployment.id} sent an unexpected event")
                    if "error" in data:
                        error = data["error"]
                        message = error.get("message") if isinstance(error, dict) else str(error)
                        raise ProviderError("status", str(message)[:MAX_ERROR_BODY], status=502)
                    yield Chunk(payload, data)
            except TimeoutError as exc:
                raise ProviderError("timeout", f"{deployment.id} stalled mid-stream") from exc
            except aiohttp.ClientError as exc:
                raise ProviderError("cut", f"{deployment.id} cut the stream: {exc}") from exc
            if not done:
                raise ProviderError("cut", f"{deployment.id} ended the stream without [DONE]")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
