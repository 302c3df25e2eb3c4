"""The fast path: OpenAI-compatible upstreams (OpenAI, Groq, Mistral, vLLM, Ollama,
LM Studio) called directly over one shared aiohttp session per worker.

A `litellm.acompletion()` call costs about 4 ms of CPU; forwarding the request
ourselves costs a fraction of that. The upstream's answer bytes are passed
through untouched (non-streaming) or event by event (streaming), so clients
get exactly what an OpenAI-compatible server sends, unless it breaks OpenAI's
schema: then `core.llm.wire` repairs the parsed answer and it is re-serialised.
Usage is always requested upstream (`stream_options.include_usage`) for
accounting; the usage-only chunk is dropped later if the client did not ask for it.

The request body sent upstream holds only the names of `core.gateway.schemas`'
allow-list for its endpoint (a copy, so even a caller that skipped validation
cannot forward anything else); destination and key are the deployment's.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from core.llm.parameters import CHAT_PARAMETERS, EMBEDDING_PARAMETERS
from core.llm.retry_after import parse_retry_after
from core.llm.types import Chunk, Completion, Deployment, ProviderError, Usage
from core.llm.wire import StreamShape, conform_completion, conform_embeddings
from core.observability.tracing import inject

MAX_ERROR_BODY = 2000
LARGE_BODY = 1 << 20  # aiohttp's TOO_LARGE_BYTES_BODY
# The schema repair for each kind of answer, by the list it must hold (`core.llm.wire`).
_CONFORM = {"choices": conform_completion, "data": conform_embeddings}


def upstream_message(raw: bytes) -> str:
    """The provider's error message, if its body carries one (never the whole body):
    `error.message` (OpenAI, Anthropic, Gemini), `error` as a string (Ollama, TGI),
    a top-level `message` (Cohere, older vLLM) or `detail` (FastAPI-based servers)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    for text in (error, data.get("message"), data.get("detail")):
        if isinstance(text, str) and text:
            return text[:MAX_ERROR_BODY]
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

    def _auth(self, deployment: Deployment) -> dict[str, str]:
        """The headers carrying the deployment's credentials (OpenAI's: a bearer key)."""
        return {"Authorization": f"Bearer {deployment.api_key}"} if deployment.api_key else {}

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self._auth(deployment)}
        inject(headers)  # the attempt span's `traceparent`, when traced
        return headers

    async def _post(
        self,
        deployment: Deployment,
        path: str,
        body: dict[str, Any],
        *,
        accept: str | None = None,
    ) -> aiohttp.ClientResponse:
        """The upstream's response to a POST of `body`; an HTTP error status, with the
        provider's message and retry hint, as a `ProviderError`. Shared with
        `core.llm.translated`, whose providers speak other protocols over the same
        machinery."""
        url = f"{deployment.api_base}{path}"
        headers = self._headers(deployment)
        if accept is not None:
            headers["Accept"] = accept
        try:
            raw = orjson.dumps(body)
        except orjson.JSONEncodeError as exc:  # JSON nested past orjson's 255 levels
            raise ProviderError(
                "status", f"The request cannot be forwarded as JSON: {exc}.", status=400
            ) from exc
        # aiohttp warns that bytes over 1 MiB block the loop while written and asks for
        # a file object, which it writes in pieces.
        data: bytes | io.BytesIO = raw if len(raw) <= LARGE_BODY else io.BytesIO(raw)
        try:
            response = await self.session.post(url, data=data, headers=headers)
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
                upstream_message(raw) or f"The provider answered HTTP {response.status}.",
                status=response.status,
                retry_after=self._retry_after(response.headers, raw),
            )
        return response

    def _retry_after(self, headers: Any, raw: bytes) -> float | None:
        """The wait an error answer asks for: `Retry-After` (or `retry-after-ms`)."""
        return parse_retry_after(headers)

    async def _fetch_json(
        self, deployment: Deployment, path: str, body: dict[str, Any]
    ) -> tuple[bytes, Any]:
        """(raw bytes, parsed JSON) of the answer to a POST; every failure on the way
        (time, connection, a cut body, invalid JSON) as a `ProviderError` by cause."""
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
            return raw, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProviderError("garbage", f"{deployment.id} answered with invalid JSON") from exc

    async def _open_stream(
        self, deployment: Deployment, path: str, body: dict[str, Any], *, accept: str | None = None
    ) -> aiohttp.ClientResponse:
        """The streamed response's head (its events are the caller's to read)."""
        try:
            async with asyncio.timeout(deployment.timeout):
                return await self._post(deployment, path, body, accept=accept)
        except TimeoutError as exc:
            raise ProviderError("timeout", f"{deployment.id} timed out") from exc
        except aiohttp.ClientError as exc:  # as in `_fetch_json`: the upstream's, not ours
            raise ProviderError("connect", f"{deployment.id} failed: {exc}") from exc

    async def _read_json(
        self, deployment: Deployment, path: str, body: dict[str, Any], expect: str
    ) -> Completion:
        raw, data = await self._fetch_json(deployment, path, body)
        if not isinstance(data, dict) or not isinstance(data.get(expect), list):
            raise ProviderError("garbage", f"{deployment.id} answered with an unexpected shape")
        if _CONFORM[expect](data):  # not OpenAI's shape: the repaired answer, re-serialised
            raw = orjson.dumps(data)
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
        response = await self._open_stream(deployment, "/chat/completions", body)
        async with response:
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                raise ProviderError("garbage", f"{deployment.id} did not answer with a stream")
            done = False
            shape = StreamShape()  # each chunk's bytes pass as they are unless repaired
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
                    shaped = shape.chunk(payload, data)
                    if shaped is not None:
                        yield shaped
            except TimeoutError as exc:
                raise ProviderError("timeout", f"{deployment.id} stalled mid-stream") from exc
            except aiohttp.ClientError as exc:
                raise ProviderError("cut", f"{deployment.id} cut the stream: {exc}") from exc
            if not done:
                raise ProviderError("cut", f"{deployment.id} ended the stream without [DONE]")
            last = shape.last()  # usage the upstream sent on a chunk with choices
            if last is not None:
                yield last

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
