"""What may reach a provider: the parameters OpenAI defines, and a short list of extras.

The allow-list both sides read: `core.gateway.schemas` refuses any other
top-level name before a call starts, and each provider (`core.llm.direct`,
`core.llm.litellm_provider`) copies only these names from the validated body.
It lives with the providers, below the gateway, because it is what a provider
call is built from.
"""

from __future__ import annotations

# The properties of OpenAI's CreateChatCompletionRequest (openai-openapi 2.3.0),
# including those inherited through `allOf`. tests/security/test_provider_arguments.py
# compares this set with the contract, so a field added on either side is noticed.
OPENAI_CHAT_PARAMETERS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "messages",
        "metadata",
        "modalities",
        "model",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
# Provider extras: names OpenAI does not define that a provider behind the gateway
# does, accepted only when they shape sampling and nothing else.
#   top_k: Anthropic, Gemini, Cohere, vLLM and Ollama sample from the k likeliest
#          tokens; litellm maps it for each, the direct path forwards it as sent
#          (OpenAI itself answers 400 to it, which the client then sees).
PROVIDER_EXTRAS = frozenset({"top_k"})
CHAT_PARAMETERS = OPENAI_CHAT_PARAMETERS | PROVIDER_EXTRAS
# CreateEmbeddingRequest (not in the contract subset; from OpenAI's API reference).
EMBEDDING_PARAMETERS = frozenset({"input", "model", "encoding_format", "dimensions", "user"})
