"""The pinned requirements carry everything litellm imports on the paths Skygate uses.

litellm imports many modules lazily, on the first call that needs them, and some of
those need optional packages: a tool call once needed `mcp`, which requirements.txt did
not pin, so every Anthropic request with tools failed in production while the test
environment (with more installed) passed. Here, for every provider kind the router
config may send through litellm (`translation: litellm`), a fresh interpreter runs the
chat call with tools, the streamed call with tools and the embedding call
(`litellm_paths.py`, against the fake upstream, no other network), and then:
- every call must succeed: an ImportError on any of those paths fails this test, not a
  client's request;
- every installed distribution the process loaded must be pinned in requirements.txt:
  one that is present only through requirements-dev.txt (or by hand) would be missing
  on a production machine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from core.llm.providers import PROVIDERS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("litellm_paths.py")


def _pinned() -> set[str]:
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==", line)
        if match:
            names.add(_normal(match.group(1)))
    return names


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_litellm_provider_path_imports_with_the_pinned_requirements() -> None:
    assert any(spec.litellm_translates for spec in PROVIDERS.values())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(SCRIPT)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] == {}, json.dumps(report["failures"], indent=2)
    # Skygate's own code is a distribution too once the checkout is installed
    # (`pip install --no-deps -e .`, for the `skygate` command); it is no requirement.
    own = {_normal(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"])}
    unpinned = sorted(d for d in report["distributions"] if _normal(d) not in _pinned() | own)
    assert unpinned == [], f"loaded on a provider path but not in requirements.txt: {unpinned}"
