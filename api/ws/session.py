"""One agent WebSocket session after the handshake: commands in, run events out.

The protocol is documented message by message in docs/websocket.md. A session holds
its subscriptions (one task per followed run, reading `RunService.events` from the
client's cursor: replay, then live, from any worker or instance) and a `Sender`; it
never runs a run itself: `run.create` starts the run in this process through the run
service, which keeps it going while the client reconnects (`RunWatchers`).

Errors about one message are an `error` frame with the message's `id`; only what
makes the session itself unusable closes it (see CLOSE in api.ws.agents).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from typing import Any

import orjson
import structlog
from pydantic import ValidationError
from starlette.websockets import WebSocket

from agents.run_views import RunRequest, run_object
from agents.runtime import Agents
from api.ws.sender import Sender, type_label
from core.auth.authenticator import Principal
from core.container import Services
from core.errors import AuthenticationError, GatewayError
from core.observability import metrics

log = structlog.get_logger("skygate.ws")
PROTOCOL = "skygate.agents.v1"
SEND_QUEUE = 512  # frames a connection may have waiting before deltas are merged
MESSAGES_PER_SECOND = 20.0  # inbound, sustained ...
MESSAGE_BURST = 60.0  # ... with this burst; beyond -> 1008
TOUCH_SECONDS = 5.0
CLOSE_SECONDS = 2.0  # a close frame a stuck reader cannot take: the transport closes anyway
STATUS_OF = {403: 4403, 404: 4404, 429: 4429}


class Session:
    def __init__(
        self,
        websocket: WebSocket,
        *,
        services: Services,
        agents: Agents,
        principal: Principal,
        live_available: bool,
    ) -> None:
        self.websocket = websocket
        self.services = services
        self.agents = agents
        self.principal = principal
        self.live_available = live_available
        self.settings = services.settings
        self.connection_id = "ws_" + uuid.uuid4().hex[:16]
        self.sender = Sender(
            websocket,
            limit=SEND_QUEUE,
            stall_seconds=services.settings.ws_send_stall_seconds,
            on_overflow=self.close,
        )
        self.subscriptions: dict[str, asyncio.Task[None]] = {}
        self.created: dict[str, str] = {}  # client id of a run.create -> run id
        self.started: set[str] = set()  # runs this session started and that are not over
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._tokens = MESSAGE_BURST
        self._refilled = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------
    async def run(self) -> None:
        sending = asyncio.create_task(self.sender.run(), name=f"{self.connection_id}-send")
        beating = asyncio.create_task(self._heartbeat(), name=f"{self.connection_id}-beat")
        self.send(
            {
                "type": "session.created",
                "connection_id": self.connection_id,
                "protocol": PROTOCOL,
                "heartbeat_seconds": self.settings.ws_heartbeat_seconds,
                "max_message_bytes": self.settings.ws_max_message_bytes,
                "max_runs": self.settings.ws_max_runs_per_connection,
                "tenant": self.principal.tenant,
                "resume": "available" if self.live_available else "this_instance_only",
            }
        )
        try:
            await self._read()
        finally:
            self.sender.stop()
            for task in (beating, *self.subscriptions.values()):
                task.cancel()
            for task in (sending, beating, *self.subscriptions.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def close(self, code: int, reason: str) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.close_code = code
        metrics.WEBSOCKET_CLOSES.labels(str(code)).inc()
        with contextlib.suppress(Exception):  # TimeoutError too: the transport is closed next
            async with asyncio.timeout(CLOSE_SECONDS):
                await self.websocket.close(code, reason[:120])

    def send(self, frame: dict[str, Any]) -> None:
        self.sender.push(frame)

    # -- reading -------------------------------------------------------------------
    async def _read(self) -> None:
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            while not self.closed.is_set():
                receive = asyncio.ensure_future(self.websocket.receive())
                await asyncio.wait({receive, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    receive.cancel()
                    return
                message = receive.result()
                if message["type"] == "websocket.disconnect":
                    return
                if not self._admit():
                    await self.close(1008, "too many messages")
                    return
                text = message.get("text")
                if text is None:
                    await self.close(4400, "binary frames are not part of the protocol")
                    return
                try:
                    data = orjson.loads(text)
                except orjson.JSONDecodeError:
                    await self.close(4400, "a message must be a JSON object")
                    return
                if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                    await self.close(4400, "a message must be a JSON object with a type")
                    return
                metrics.WEBSOCKET_MESSAGES.labels("in", type_label(data["type"])).inc()
                await self._dispatch(data)
        finally:
            closed.cancel()

    def _admit(self) -> bool:
        now = time.monotonic()
        self._tokens = min(
            MESSAGE_BURST, self._tokens + (now - self._refilled) * MESSAGES_PER_SECOND
        )
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _dispatch(self, data: dict[str, Any]) -> None:
        kind, ref = data["type"], data.get("id")
        if not isinstance(ref, str | int) or isinstance(ref, bool) or len(str(ref)) > 128:
            self.error(None, "invalid_message", "Every message needs an `id` (a string).")
            return
        ref = str(ref)
        handler = {
            "run.create": self._create,
            "run.subscribe": self._subscribe,
            "run.unsubscribe": self._unsubscribe,
            "run.cancel": self._cancel,
            "tool.output": self._tool_output,
            "ping": self._ping,
            "auth": self._reauth,
        }.get(kind)
        if handler is None:
            self.error(ref, "unknown_type", f"Unknown message type {kind[:64]!r}.")
            return
        try:
            await handler(ref, data)
        except AuthenticationError:
            await self.close(1008, "the session's key is no longer valid")
        except GatewayError as failure:
            retryable = failure.status_code in (429, 503) or failure.status_code >= 500
            self.error(
                ref,
                failure.code or failure.error_type,
                failure.message,
                status=STATUS_OF.get(failure.status_code),
                retryable=retryable,
            )

    def error(
        self,
        ref: str | None,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        frame: dict[str, Any] = {
            "type": "error",
            "id": ref,
            "code": code,
            "message": message,
            "retryable": retryable,
        }
        if status is not None:
            frame["status"] = status
        self.send(frame)

    # -- commands ------------------------------------------------------------------
    async def _create(self, ref: str, data: dict[str, Any]) -> None:
        self.principal = await self.services.auth.recheck(self.principal)  # revoked -> 1008
        active = [run for run in self.started if run in self.agents.live.controls]
        self.started = set(active)
        if len(active) >= self.settings.ws_max_runs_per_connection:
            self.error(
                ref,
                "run_quota",
                "This connection has as many runs going as it may.",
                status=4429,
                retryable=True,
            )
            return
        tenant_runs = await self.agents.runs.active_runs(self.principal.tenant)
        if tenant_runs >= self.settings.ws_max_runs_per_tenant:
            self.error(
                ref,
                "run_quota",
                "This tenant has as many runs going as it may.",
                status=4429,
                retryable=True,
            )
            return
        fields = {
            k: data[k] for k in ("input", "thread_id", "limits", "idempotency_key") if k in data
        }
        try:
            request = RunRequest.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "message"
            self.error(ref, "invalid_request", f"{where}: {first['msg']}")
            return
        agent_id = data.get("agent_id")
        if not isinstance(agent_id, str) or not agent_id or len(agent_id) > 64:
            self.error(ref, "invalid_request", "agent_id: a string is required")
            return
        runs = self.agents.runs
        row, new = await runs.create(self.principal, agent_id, request, "ws")
        if new:
            principal = self.principal

            async def source() -> Principal:
                return principal

            runs.start(row, source)
            self.agents.watchers.guard(row.id)
            self.started.add(row.id)
        self.created[ref] = row.id
        self._follow(row.id, 0)
        self.send({"type": "ack", "id": ref, "run_id": row.id})

    async def _subscribe(self, ref: str, data: dict[str, Any]) -> None:
        run_id = _text(data.get("run_id"))
        after = data.get("after_seq", 0)
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            self.error(ref, "invalid_request", "after_seq: a non-negative integer")
            return
        row = await self.agents.runs.get(self.principal.tenant, run_id)  # 404 -> 4404
        if after > row.last_seq and row.status in (
            "completed",
            "incomplete",
            "failed",
            "cancelled",
        ):
            self.send({"type": "run.snapshot", "run_id": row.id, "run": run_object(row)})
        self._follow(row.id, after)
        self.send({"type": "ack", "id": ref, "run_id": row.id})

    async def _unsubscribe(self, ref: str, data: dict[str, Any]) -> None:
        task = self.subscriptions.pop(_text(data.get("run_id")), None)
        if task is not None:
            task.cancel()
        self.send({"type": "ack", "id": ref})

    async def _cancel(self, ref: str, data: dict[str, Any]) -> None:
        run_id = data.get("run_id") or self.created.get(_text(data.get("run_ref")))
        mode = data.get("mode", "immediate")
        if mode not in ("immediate", "after_turn"):
            self.error(ref, "invalid_request", "mode: immediate or after_turn")
            return
        row = await self.agents.runs.cancel(
            self.principal.tenant, run_id=_text(run_id), idempotency_key=None, mode=mode
        )
        self.send({"type": "ack", "id": ref, "run_id": row.id, "status": row.status})

    async def _tool_output(self, ref: str, data: dict[str, Any]) -> None:
        call_id, output = data.get("tool_call_id"), data.get("output")
        if not isinstance(call_id, str) or not isinstance(output, str) or len(output) > 64_000:
            self.error(
                ref, "invalid_request", "tool_call_id and output (<= 64000 chars) are strings"
            )
            return
        row = await self.agents.runs.submit_tool_outputs(
            self.principal.tenant, _text(data.get("run_id")), {call_id: output}
        )
        self.send({"type": "ack", "id": ref, "run_id": row.id})

    async def _ping(self, ref: str, data: dict[str, Any]) -> None:
        self.send({"type": "pong", "id": ref, "ts": time.time()})

    async def _reauth(self, ref: str, data: dict[str, Any]) -> None:
        self.error(ref, "already_authenticated", "This session is authenticated.")

    # -- following runs --------------------------------------------------------------
    def _follow(self, run_id: str, after: int) -> None:
        previous = self.subscriptions.pop(run_id, None)
        if previous is not None:
            previous.cancel()
        self.subscriptions[run_id] = asyncio.create_task(self._pump(run_id, after))
        asyncio.ensure_future(self.agents.watchers.touch([run_id]))  # watched from here now

    async def _pump(self, run_id: str, after: int) -> None:
        watchers = self.agents.watchers
        watchers.watch(run_id)
        try:
            async for event in self.agents.runs.events(run_id, after):
                self.send(event.payload())
                if event.terminal:
                    watchers.forget(run_id)
                    return
        except Exception as exc:  # the store away: say so; the client resumes from its seq
            log.warning("ws_follow_failed", run_id=run_id, error=type(exc).__name__)
            self.error(
                None,
                "events_unavailable",
                f"Events of {run_id} are unavailable; subscribe again with your last seq.",
                retryable=True,
            )
        finally:
            watchers.unwatch(run_id)
            if self.subscriptions.get(run_id) is asyncio.current_task():
                del self.subscriptions[run_id]

    async def _heartbeat(self) -> None:
        """Heartbeats, the Redis watch marks of followed runs, token expiry, and the
        goodbye when this worker stops. Idle sockets wake only for their heartbeat (a
        thousand of them cost next to nothing between beats)."""
        lifecycle = self.websocket.app.state.lifecycle
        stopping = lifecycle.stopping  # set when this worker drains or recycles
        interval = self.settings.ws_heartbeat_seconds
        next_beat = time.monotonic() + interval
        next_touch = time.monotonic() + TOUCH_SECONDS
        while not self.closed.is_set():
            now = time.monotonic()
            wake = min(next_beat, next_touch if self.subscriptions else next_beat)
            if self.principal.expires_at is not None:
                wake = min(wake, now + max(self.principal.expires_at - time.time(), 0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), max(wake - now, 0.05))
            now = time.monotonic()
            if stopping.is_set() or lifecycle.draining or lifecycle.closing:
                self.send(
                    {"type": "server.draining", "reconnect_after_ms": random.randint(250, 2500)}
                )
                await self.sender.flush(within=1.0)
                await self.close(1012, "server restarting: reconnect and resume")
                return
            if self.principal.expires_at is not None and self.principal.expires_at <= time.time():
                await self.close(4401, "the session's token expired")
                return
            if now >= next_beat:
                next_beat = now + interval
                self.send({"type": "heartbeat", "ts": time.time()})
            if now >= next_touch:
                next_touch = now + TOUCH_SECONDS
                if self.subscriptions:
                    await self.agents.watchers.touch(list(self.subscriptions))


def _text(value: Any) -> str:
    return value[:64] if isinstance(value, str) else ""
