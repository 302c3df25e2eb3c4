"""The `skygate` CLI run as a real subprocess (`python -m skygate`), the way an
operator or a CI step runs it: its own process, its own event loop, only the
environment a test gives it (no ambient Skygate settings) and a working directory
of the test's (no stray ./.env or ./data from the checkout).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SECRET_PATTERN = re.compile(r"sk-sg-[A-Za-z0-9_-]{43}")
TIMEOUT = 90.0


@dataclass(frozen=True, slots=True)
class Ran:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def secrets(self) -> list[str]:
        """Every API-key secret the command printed, on either stream."""
        return SECRET_PATTERN.findall(self.output)


def environment(**variables: str) -> dict[str, str]:
    """`variables` and what a process needs to start: PATH, and the checkout on
    PYTHONPATH (the CLI needs no install)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), **variables}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "skygate", *args]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Ran:
    """`python -m skygate ARGS`, to its end."""
    done = subprocess.run(
        command(*args),
        cwd=cwd,
        env=env if env is not None else environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


async def arun(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Ran:
    """`run` for async tests: the event loop (an in-process app's) keeps running."""
    process = await asyncio.create_subprocess_exec(
        *command(*args),
        cwd=cwd,
        env=env if env is not None else environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())
