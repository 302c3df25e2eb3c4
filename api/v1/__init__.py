"""The OpenAI-compatible API under `/api/v1`: chat completions, embeddings,
models, usage, API keys (admin) and token exchange.

Routes spell out their full path (no router prefix) so that the route template
— the `route` label of every metric and access line — is the full path on
every FastAPI version.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.v1 import auth, chat, keys, models, usage

router = APIRouter()
router.include_router(chat.router)
router.include_router(models.router)
router.include_router(usage.router)
router.include_router(keys.router)
router.include_router(auth.router)
