"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol.

For pages whose behaviour is their script's: the test loads the page in a real
browser, which enforces the page's CSP, runs its script, keeps its
sessionStorage, and shows what a person would see (`evaluate`, `screenshot`).
The browser runs in its own process group with a throwaway profile and no
network beyond what the page asks of 127.0.0.1 (background services off); it
is stopped by its group at the end, also when the test fails.

Console messages are collected in `Page.messages`, and what the browser refused
(a CSP violation) or the page's script threw in `Page.errors`, so a test can
assert that nothing went wrong.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

WAIT_SECONDS = 15.0
FLAGS = (
    "--headless",
    "--no-sandbox",  # as root (the test machines)
    "--disable-gpu",
    "--window-size=1280,900",
    "--hide-scrollbars",
    "--remote-debugging-port=0",  # the port is written to DevToolsActivePort
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-pings",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
)


def chromium_binary() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium not found; install it: apt-get install -y chromium")
    return path


class Page:
    """One browser tab, spoken to over its DevTools WebSocket."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: dict[str, asyncio.Event] = {}
        self.messages: list[str] = []
        self.errors: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.socket:
            message = json.loads(raw)
            if "id" in message:
                future = self.pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            method, params = message.get("method"), message.get("params", {})
            if method == "Log.entryAdded":
                entry = params["entry"]
                self.messages.append(entry.get("text", ""))
                if entry.get("level") == "error" or "Content Security Policy" in entry.get(
                    "text", ""
                ):
                    self.errors.append(entry.get("text", ""))
            elif method == "Runtime.consoleAPICalled":
                self.messages.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                self.errors.append(str(params["exceptionDetails"]))
            self.events.setdefault(method, asyncio.Event()).set()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[command_id] = future
        await self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        async with asyncio.timeout(WAIT_SECONDS):
            reply = await future
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        loaded = self.events.setdefault("Page.loadEventFired", asyncio.Event())
        loaded.clear()
        await self.send("Page.navigate", url=url)
        async with asyncio.timeout(WAIT_SECONDS):
            await loaded.wait()

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of `expression` in the page (promises awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, within: float = WAIT_SECONDS) -> Any:
        """Poll `expression` until it is truthy; its value."""
        async with asyncio.timeout(within):
            while not (value := await self.evaluate(expression)):
                await asyncio.sleep(0.1)
        return value

    async def screenshot(self, path: Path) -> None:
        """The whole page (not only the window), as PNG."""
        size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = await self.send(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )
        data = shot["data"]
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data))


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process) -> int:
    marker = profile / "DevToolsActivePort"
    async with asyncio.timeout(WAIT_SECONDS):
        while not marker.exists() or not marker.read_text().strip():
            if process.returncode is not None:
                raise RuntimeError(f"chromium exited ({process.returncode})")
            await asyncio.sleep(0.05)
    return int(marker.read_text().split()[0])


@contextlib.asynccontextmanager
async def browser_page() -> AsyncIterator[Page]:
    """A fresh headless Chromium with one blank tab, closed when the block ends."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    log = (profile / "chromium.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        chromium_binary(),
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        port = await _devtools_port(profile, process)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as devtools:
            targets = (await devtools.get("/json/list")).json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        async with connect(url, max_size=None) as socket:
            page = Page(socket)
            for domain in ("Page", "Runtime", "Log"):
                await page.send(f"{domain}.enable")
            try:
                yield page
            finally:
                page.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await page.reader
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
