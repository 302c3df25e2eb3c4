"""Importing litellm: lazily, once, offline; or, in a process that forks workers,
in full before the fork (`preload_litellm`), so the workers share it."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from functools import cache
from typing import Any

# Modules litellm imports on its first call rather than at its import (found by
# running a chat, a stream and a tool call through Anthropic and Gemini in a fresh
# process): a worker importing them itself writes into the pages it shares with
# the master (docs/PERFORMANCE.md, "Memory"). A name another litellm version lacks
# is skipped; `tests/core/llm/test_litellm_import.py` says when the list is stale.
FIRST_CALL_MODULES = (
    "anyio._backends._asyncio",  # litellm runs its synchronous part in a thread
    "litellm._service_logger",
    "litellm.integrations.generic_api.generic_api_callback",
    "litellm.litellm_core_utils.logging_callback_manager",
    "litellm.llms.vertex_ai.context_caching.vertex_ai_context_caching",
    "litellm.llms.vertex_ai.vertex_ai_partner_models.llama3.transformation",
    "litellm.proxy._types",
    "litellm.proxy.openai_files_endpoints.common_utils",
    "litellm.types.integrations.compression_interception",
    "litellm.types.litellm_core_utils.streaming_chunk_builder_utils",
)


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


def preload_litellm(models: Iterable[tuple[str, str]]) -> None:
    """Load, in a process about to fork workers (the gunicorn master), what litellm
    builds on its first call to these (litellm provider, model) pairs: the import
    (~110 MiB), its default tokenizer (tiktoken's cl100k_base, ~40 MiB, loaded for
    every Anthropic call), its per-model lookups (capabilities, the lower-cased cost
    map, the bundled cost map read again) and `FIRST_CALL_MODULES`. Each worker would
    otherwise build its own copy.

    Reads files of the installed package only: no network, no thread. Afterwards
    litellm's native (Rust) routes are forbidden in this process, as litellm's own
    proxy does in its gunicorn master: their runtime threads would not survive the
    fork. The routes Skygate calls (chat completions, embeddings, the tokenizer) are
    Python-only in litellm's catalog.
    """
    litellm = litellm_module()
    litellm.token_counter(model="", text="warm")  # loads the default tiktoken encoding
    for provider, model in models:
        # Unknown models are the router's business, not the warm-up's.
        try:
            litellm.get_model_info(model=model, custom_llm_provider=provider)
        except Exception:  # litellm raises a bare Exception for a model it does not know
            pass
        litellm.get_supported_openai_params(model=model, custom_llm_provider=provider)
    for name in FIRST_CALL_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    try:
        from litellm.rust_bridge.fork_guard import reserve_process_for_forking
    except ImportError:  # a litellm without the native extension
        return
    reserve_process_for_forking("the gunicorn master")
