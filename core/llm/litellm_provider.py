"""litellm's translation, for a provider declared `translation: litellm` in the router
config (kinds `anthropic` and `google`; Skygate translates every built-in provider
itself: `core.llm.anthropic`, `core.llm.gemini`, `core.llm.cohere`). litellm is
imported only here and beside it (`litellm_import`: the import; `litellm_errors`: its
exceptions by cause; `wire`: its answers in OpenAI's shape).

litellm is imported lazily, on the first call or at start when such a
deployment is configured, so a gateway without one never pays its ~1.8 s import
and ~160 MiB per worker. Its model cost
map is forced to the bundled local copy: nothing is fetched from the network.

litellm's keyword arguments mix OpenAI's parameters with its own settings
(`model_list`, `api_base`, `extra_headers`, `mock_response`, ... several hundred
names), so the call is never built from the client's dict: it copies the names
of `LITELLM_CHAT_PARAMETERS` / `LITELLM_EMBEDDING_PARAMETERS` and then sets the
deployment's model, key, base URL, timeout and retries itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from core.llm.litellm_errors import provider_error
from core.llm.litellm_import import litellm_module
from core.llm.parameters import CHAT_PARAMETERS, EMBEDDING_PARAMETERS
from core.llm.providers import PROVIDERS
from core.llm.types import Chunk, Completion, Deployment, ProviderError, Usage
from core.llm.wire import StreamShape, clean_litellm, conform_completion, conform_embeddings
from core.observability.tracing import trace_headers

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
        headers = trace_headers()  # the attempt span's `traceparent`, when traced
        if headers is not None:
            kwargs["extra_headers"] = headers
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
            raise provider_error(exc, deployment) from exc
        data = clean_litellm(response.model_dump())
        conform_completion(data)
        return Completion(orjson.dumps(data), data, Usage.from_openai(data.get("usage")))

    async def stream(self, deployment: Deployment, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        litellm = litellm_module()
        kwargs = self._chat_kwargs(deployment, body)
        kwargs.update(stream=True, stream_options={"include_usage": True})
        shape = StreamShape()
        try:
            response = await litellm.acompletion(**kwargs)
            async for chunk in response:
                shaped = shape.chunk(None, clean_litellm(chunk.model_dump()))
                if shaped is not None:
                    yield shaped
        except ProviderError:
            raise
        except Exception as exc:
            raise provider_error(exc, deployment) from exc
        last = shape.last()
        if last is not None:
            yield last

    async def embed(self, deployment: Deployment, body: dict[str, Any]) -> Completion:
        litellm = litellm_module()
        kwargs = self._kwargs(deployment, body, LITELLM_EMBEDDING_PARAMETERS)
        try:
            response = await litellm.aembedding(**kwargs)
        except Exception as exc:
            raise provider_error(exc, deployment) from exc
        data = clean_litellm(response.model_dump())
        conform_embeddings(data)
        return Completion(orjson.dumps(data), data, Usage.from_openai(data.get("usage")))

    async def close(self) -> None:
        return None
