"""Providers that do not speak OpenAI's protocol (Anthropic, Gemini, Cohere)
through litellm's translation. The only module in Skygate that imports litellm.

litellm is imported lazily, on the first call or at start when such a
deployment is configured, so a gateway serving only OpenAI-compatible
providers never pays its ~1.5 s import and ~160 MiB per worker. Its model cost
map is forced to the bundled local copy: nothing is fetched from the network.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import orjson

from core.llm.costs import LITELLM_PREFIX
from core.llm.types import Chunk, Completion, Deployment, ProviderError, Usage

# litellm-only keys that must not reach an OpenAI-shaped client.
_PRIVATE_KEYS = ("_hidden_params", "_response_ms", "provider_specific_fields")


@cache
def litellm_module() -> Any:
    """Import litellm offline (bundled cost map, no telemetry), once."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_LOCAL_BLOG_POSTS", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = True  # a fallback to another provider must not fail on a param
    return litellm


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    for key in _PRIVATE_KEYS:
        data.pop(key, None)
    for choice in data.get("choices") or ():
        if isinstance(choice, dict):
            for key in _PRIVATE_KEYS:
                choice.pop(key, None)
            for part in ("message", "delta"):
                inner = choice.get(part)
                if isinstance(inner, dict):
                    for key in (
                        *_PRIVATE_KEYS,
                        "function_call",
                        "audio",
                        "annotations",
                        "reasoning_content",
                        "thinking_blocks",
                    ):
                        if inner.get(key) is None or key in _PRIVATE_KEYS:
                            inner.pop(key, None)
    return data


def _error(exc: BaseException, deployment: Deployment) -> ProviderError:
    litellm = litellm_module()
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", "") or exc)[:2000]
    retry_after = None
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is not None:
        from core.llm.direct import parse_retry_after

        retry_after = parse_retry_after(headers)
    if isinstance(exc, litellm.Timeout):
        return ProviderError("timeout", f"{deployment.id} timed out")
    if isinstance(exc, litellm.APIConnectionError) and status in (None, 500):
        return ProviderError("connect", f"{deployment.id} failed: {message}")
    if isinstance(status, int):
        return ProviderError("status", message, status=status, retry_after=retry_after)
    return ProviderError("garbage", f"{deployment.id} failed: {message}")


class LiteLLMProvider:
    """Chat, streaming and embeddings through litellm, answered in OpenAI's shape."""

    def _kwargs(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        prefix = LITELLM_PREFIX.get(deployment.kind, deployment.kind)
        kwargs = dict(body)
        kwargs.update(
            model=f"{prefix}/{deployment.model}" if prefix else deployment.model,
            timeout=deployment.timeout,
            num_retries=0,
        )
        if deployment.api_key:
            kwargs["api_key"] = deployment.api_key
        if deployment.api_base:
            kwargs["api_base"] = deployment.api_base
        return kwargs

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        litellm = litellm_module()
        try:
            response = await litellm.acompletion(**self._kwargs(deployment, body))
        except Exception as exc:  # litellm raises its own tree; classify it
            raise _error(exc, deployment) from exc
        data = _clean(response.model_dump())
        return Completion(orjson.dumps(data), data, Usage.from_openai(data.get("usage")))

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        litellm = litellm_module()
        kwargs = self._kwargs(deployment, body)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        try:
            response = await litellm.acompletion(**kwargs)
            async for chunk in response:
                data = _clean(chunk.model_dump())
                yield Chunk(orjson.dumps(data), data)
        except ProviderError:
            raise
        except Exception as exc:
            raise _error(exc, deployment) from exc

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        litellm = litellm_module()
        kwargs = self._kwargs(deployment, body)
        try:
            response = await litellm.aembedding(**kwargs)
        except Exception as exc:
            raise _error(exc, deployment) from exc
        data = _clean(response.model_dump())
        return Completion(orjson.dumps(data), data, Usage.from_openai(data.get("usage")))

    async def close(self) -> None:
        return None
