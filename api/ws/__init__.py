"""WebSocket routes: `/ws/agents` (agent clients; protocol in docs/websocket.md)."""

from __future__ import annotations

from api.ws.agents import router

__all__ = ["router"]
