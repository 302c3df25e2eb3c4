"""No built-in provider loads litellm: OpenAI, Anthropic, Gemini, Groq, Mistral and
Cohere are each spoken natively (`core.llm.direct`, `core.llm.anthropic`,
`core.llm.gemini`, `core.llm.cohere`), so a gateway with all six configured never pays
litellm's import (about 1.8 s of start-up and 160 MiB a process, docs/PERFORMANCE.md).
Only a provider declared `translation: litellm` imports it (test_litellm_imports.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""\
    import asyncio, sys
    from bench.fake_upstream import FakeUpstream
    from core.llm.defaults import DEFAULT_MODELS
    from tests.support.app import make_settings, running_app

    TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}

    async def main():
        async with FakeUpstream() as fake:
            settings = make_settings(
                database_url=sys.argv[1],
                openai_api_key="k", openai_api_base=fake.base_url,
                anthropic_api_key="k", anthropic_api_base=fake.root_url,
                google_ai_api_key="k", google_ai_api_base=fake.root_url + "/v1beta",
                groq_api_key="k", groq_api_base=fake.base_url,
                mistral_api_key="k", mistral_api_base=fake.base_url,
                cohere_api_key="k", cohere_api_base=fake.root_url,
            )
            async with running_app(settings) as (_, http):
                groups = [m["id"] for m in (await http.get("/api/v1/models")).json()["data"]]
                assert set(DEFAULT_MODELS.values()) <= set(groups), groups
                for group in groups:
                    ask = {"model": group, "tools": [TOOL],
                           "messages": [{"role": "user", "content": "weather in Paris?"}]}
                    for body in (ask, {**ask, "stream": True}):
                        response = await http.post("/api/v1/chat/completions", json=body)
                        assert response.status_code == 200, (group, response.text)
                        assert "get_weather" in response.text, (group, response.text)
        print(sorted(m for m in sys.modules if m.split(".")[0] == "litellm"))

    asyncio.run(main())
    """)


def test_all_six_providers_with_tools_never_import_litellm(sqlite_url: str) -> None:
    """Chat and a stream, with a tool call, on every default group of the six, in a
    fresh interpreter (the test session has imported litellm for other tests)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_API_BASE"))}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, sqlite_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
