"""Real `python -m worker` processes for the worker tests, and waits on
conditions (a deadline and a short poll of what the test looks at, never a
fixed sleep standing in for background work)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.gateway import ROOT
from tests.support.servers import stop_group

T = TypeVar("T")
PLUGIN = "tests.worker.plugin"

# Short timings for tests: beats every 0.3 s (stale after 0.9 s), a dead worker's
# delivery re-picked after 2 s, polled every 0.5 s.
FAST = {
    "WORKER_HEARTBEAT_SECONDS": "0.3",
    "JOB_HEARTBEAT_TIMEOUT_SECONDS": "2",
    "JOB_DEQUEUE_TIMEOUT_SECONDS": "0.5",
    "JOB_TYPES_MODULE": PLUGIN,
}


def fast_settings(**overrides: Any) -> dict[str, Any]:
    return {key.lower(): value for key, value in FAST.items()} | overrides


class Worker:
    def __init__(self, name: str, tmp: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = tmp / f"{name}.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
            "WORKER_NAME": name,
            **FAST,
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def started(self, within: float = 30) -> Worker:
        await until(lambda: _ready(self), within, what=f"{self.name} started")
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)


async def _ready(worker: Worker) -> bool:
    if worker.proc is not None and worker.proc.poll() is not None:
        raise RuntimeError(f"{worker.name} exited:\n{worker.logs()[-3000:]}")
    return '"worker_started"' in worker.logs()


async def until(
    check: Callable[[], Awaitable[T | None]], within: float = 20, *, what: str = "condition"
) -> T:
    """The first truthy result of `check`, polled every 50 ms for `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def traces(path: Path) -> list[tuple[str, int, str, int]]:
    """(label, step, start|done, pid) for every line the plugin's jobs wrote."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        label, step, what, pid = line.split()
        rows.append((label, int(step), what, int(pid)))
    return rows
