"""The OpenAI-compatible API under `/api/v1`: chat completions, embeddings,
models, usage, agents and their runs, background jobs, API keys (admin) and token exchange.

Routes spell out their full path (no router prefix) so that the route template
— the `route` label of every metric and access line — is the full path on
every FastAPI version. The routers are included into the app directly, not
nested: every level of nesting is another matching pass per request.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.v1 import agents, auth, chat, jobs, keys, models, usage, ws_tickets

# The LLM routes first: FastAPI matches routers in order, and they carry the traffic.
ROUTERS: tuple[APIRouter, ...] = (
    chat.router,
    models.router,
    usage.router,
    jobs.router,
    agents.router,
    ws_tickets.router,
    keys.router,
    auth.router,
)
