"""The app test_websocket_serving.py serves under gunicorn (`ws_app:app`): Skygate's
own app (`create_app`: the whole middleware stack, the production protocols) plus
WebSocket routes that exist only in tests.

- `ECHO` answers each text message with its length (a 1 MiB message is not sent back);
- `DENIED` refuses the upgrade with a 401 from a route, before accept;
- `STOPPING` waits for `lifecycle.stopping`, then says so and closes 1012 itself,
  as the agents endpoint does on a drain (`STOPPING_REASON` tells its close from
  uvicorn's, which has none).
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, WebSocket

from core.errors import AuthenticationError
from core.infra.health import Lifecycle

ECHO, DENIED, STOPPING = "/test/ws/echo", "/test/ws/denied", "/test/ws/stopping"
STOPPING_REASON = "server draining"


def add_websocket_routes(app: FastAPI) -> None:
    @app.websocket(ECHO)
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            await websocket.send_text(str(len(message.get("text") or message.get("bytes") or "")))

    @app.websocket(DENIED)
    async def denied(websocket: WebSocket) -> None:
        raise AuthenticationError("No credentials for this test route.")

    @app.websocket(STOPPING)
    async def stopping(websocket: WebSocket) -> None:
        lifecycle: Lifecycle = websocket.app.state.lifecycle
        await websocket.accept()
        stop = asyncio.ensure_future(lifecycle.stopping.wait())
        gone = asyncio.ensure_future(websocket.receive())  # the client leaving first
        await websocket.send_text("waiting")
        try:
            await asyncio.wait({stop, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            gone.cancel()
        if stop.done() and not stop.cancelled():
            await websocket.send_text("stopping")
            await websocket.close(1012, STOPPING_REASON)


def __getattr__(name: str) -> FastAPI:
    """`ws_app:app`, built in the gunicorn worker from its environment."""
    if name == "app":
        from main_enterprise import create_app

        application = create_app()
        add_websocket_routes(application)
        globals()["app"] = application
        return application
    raise AttributeError(name)
