"""The OpenAI-compatible API under `/api/v1`.

Chat completions, embeddings and models arrive with the router issue; keys,
tokens and usage with the auth issue. Until then `/api/v1` answers 404 in the
OpenAI error shape like any unknown path.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1")
