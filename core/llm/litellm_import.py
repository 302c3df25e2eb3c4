"""Importing litellm: lazily, once, offline."""

from __future__ import annotations

import os
from functools import cache
from typing import Any


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
