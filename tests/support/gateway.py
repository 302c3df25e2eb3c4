"""Run Skygate as real processes (gunicorn or the embedded server) for tests.

Each process is started in its own process group, its output captured to a
file, and stopped by PID at the end — also when the test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


class GatewayProcess:
    """Skygate under gunicorn (`kind="gunicorn"`) or `python main_enterprise.py`."""

    def __init__(self, env: dict[str, str], log_path: Path, *, kind: str = "gunicorn") -> None:
        self.port = free_port()
        self.kind = kind
        self.log_path = log_path
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "PORT": str(self.port),
            "HOST": "127.0.0.1",  # tests listen on loopback only (a test may override it)
            "LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
            "SHUTDOWN_DRAIN_SECONDS": "0",  # tests that are about the drain set it
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.kind == "gunicorn":
            return [str(VENV_BIN / "gunicorn"), "-c", "gunicorn.conf.py", "main_enterprise:app"]
        return [sys.executable, "main_enterprise.py"]

    def start(self, *, wait: bool = True, timeout: float = 30) -> GatewayProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"gateway exited ({code}):\n{self.logs()[-4000:]}")
            try:
                if httpx.get(f"{self.base_url}/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"gateway did not start in {timeout}s:\n{self.logs()[-4000:]}")

    def wait_exit(self, timeout: float = 30) -> int:
        """The exit code of a process expected to stop by itself (a refused start)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        try:  # stray workers of a killed master
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.proc.returncode


@contextmanager
def sqlite_gateway(root: Path, **env: str) -> Iterator[GatewayProcess]:
    """gunicorn (2 workers on loopback) over a fresh migrated SQLite database in
    `root`, started and stopped around the block; `env` adds or overrides settings."""
    from database.schema import upgrade_head

    url = f"sqlite+aiosqlite:///{root}/gateway.db"
    upgrade_head(url)
    process = GatewayProcess(
        {
            "DATABASE_URL": url,
            "HOST": "127.0.0.1",
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(root / "prom"),
            **env,
        },
        root / "gunicorn.log",
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()
