"""Providers that do not speak OpenAI's protocol (Anthropic, Gemini, Cohere)
through litellm's translation. The only module in Skygate that imports litellm.

litellm is imported lazily, on the first call or at start when such a
deployment is configured, so a gateway serving only OpenAI-compatible
providers never pays its ~1.5 s import and ~160 MiB per worker. Its model cost
map is forced to the bundled local copy: nothing is fetched from the network.

litellm's keyword arguments mix OpenAI's parameters with its own settings
(`model_list`, `api_base`, `extra_headers`, `mock_response`, ... several hundred
names), so the call is never built from the client's dict: it copies the names
of `LITELLM_CHAT_PARAMETERS` / `LITELLM_EMBEDDING_PARAMETERS` and then sets the
deployment's model, key, base URL, timeout and retries itself.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import orjson

from core.llm.parameters import CHAT_PARAMETERS, EMBEDDING_PARAMETERS
from core.llm.providers import PROVIDERS
from core.llm.types import Chunk, Completion, Deployment, ProviderError, Usage

# litellm-only keys that must not reach an OpenAI-shaped client.
_PRIVATE_KEYS = ("_hidden_params", "_response_ms", "provider_specific_fields")

# What litellm gets of a chat body: the gateway's allow-list, less the OpenAI names
# litellm reads as its own or cannot map:
#   metadata             litellm's logging and callback context (`litellm_params`),
#                        not the provider's; Anthropic's `metadata.user_id` comes
#                        from `user`, which litellm maps.
#   moderation,          OpenAI-only features litellm does not know: it would copy
#   prompt_cache_options them into the provider's body as unknown extras.
#   stream,              set by `stream()` itself (usage is always requested, for
#   stream_options       metering).
#   model                the deployment's, never the client's.
# Every other OpenAI name is one litellm maps for the provider or drops
# (`drop_params`). The messages, tools and formats inside were closed by
# `core.gateway.schemas` (no provider-hosted tools, no non-web URLs, no unknown keys).
LITELLM_CHAT_PARAMETERS = CHAT_PARAMETERS - {
    "metadata",
    "moderation",
    "prompt_cache_options",
    "stream",
    "stream_options",
    "model",
}
LITELLM_EMBEDDING_PARAMETERS = EMBEDDING_PARAMETERS - {"model"}


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
    # litellm fetches some image URLs itself to inline them (`http://` ones for
    # Anthropic; for Gemini, those without an image extension): keep its SSRF guard
    # on, no host exempt, so such a fetch never reaches a loopback, private or
    # cloud-metadata address.
    litellm.user_url_validation = True
    litellm.user_url_allowed_hosts = []
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
            message = choice.get("message")
            if isinstance(message, dict):
                # litellm numbers a message's tool calls; OpenAI's message has no `index`
                # (a delta's has), and a client sends the message back as it got it.
                for call in message.get("tool_calls") or ():
                    if isinstance(call, dict):
                        call.pop("index", None)
    return data


def _error(exc: BaseException, deployment: Deployment) -> ProviderError:
    litellm = litellm_module()
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", "") or exc)[:2000]
    retry_after = None
    # litellm keeps the provider's headers here; its `exc.response` is often its own, empty
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is not None:
        from core.llm.retry_after import parse_retry_after

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

    def _kwargs(
        self, deployment: Deployment, body: dict[str, Any], allowed: frozenset[str]
    ) -> dict[str, Any]:
        """The allowed names of `body`, then the deployment's own settings: these last,
        so nothing in the body could replace them even if the allow-list let it."""
        kwargs = {name: value for name, value in body.items() if name in allowed}
        prefix = PROVIDERS[deployment.kind].litellm_prefix
        kwargs["model"] = f"{prefix}/{deployment.model}" if prefix else deployment.model
        kwargs["timeout"] = deployment.timeout
        kwargs["num_retries"] = 0  # the router retries; this zeroes litellm's max_retries too
        if deployment.api_key:
            kwargs["api_key"] = deployment.api_key
        if deployment.api_base:
            kwargs["api_base"] = deployment.api_base
        return kwargs

    def _chat_kwargs(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, Any]:
        kwargs = self._kwargs(deployment, body, LITELLM_CHAT_PARAMETERS)
        # With tools present litellm first looks for MCP servers to call itself (a
        # connection from the gateway) and imports the optional `mcp` package to do it;
        # without that package every call with tools failed. Skygate's tools are
        # function and custom tools only (`core.gateway.schemas`): skip the MCP step.
        kwargs["_skip_mcp_handler"] = True
        return kwargs

    async def complete(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        litellm = litellm_module()
        try:
            response = await litellm.acompletion(**self._chat_kwargs(deployment, body))
        except Exception as exc:  # litellm raises its own tree; classify it
            raise _error(exc, deployment) from exc
        data = _clean(response.model_dump())
        return Completion(orjson.dumps(data), data, Usage.from_openai(data.get("usage")))

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        litellm = litellm_module()
        kwargs = self._chat_kwargs(deployment, body)
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
        kwargs = self._kwargs(deployment, body, LITELLM_EMBEDDING_PARAMETERS)
        try:
            response = await litellm.aembedding(**kwargs)
        except Exception as exc:
            raise _error(exc, deployment) from exc
        data = _clean(response.model_dump())
        return Completion(orjson.dumps(data), data, Usage.from_openai(data.get("usage")))

    async def close(self) -> None:
        return None
