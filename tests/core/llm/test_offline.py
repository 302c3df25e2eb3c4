"""Nothing is downloaded at import or at run time: with every non-loopback
connection and DNS lookup refused, the gateway starts, prices a request (from the
cost map litellm bundles) and serves Anthropic and OpenAI-compatible traffic, without
importing litellm (both are spoken natively). litellm's own import is checked offline
by test_litellm_import.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent("""
    import asyncio, json, socket, sys
    attempts = []
    LOCAL = ("127.", "localhost", "::1")
    real_connect, real_gai = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and not host.startswith(LOCAL):
            attempts.append(("connect", host))
            raise OSError("network disabled for this test")
        return real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and not str(host).startswith(LOCAL):
            attempts.append(("dns", host))
            raise socket.gaierror("network disabled for this test")
        return real_gai(host, *args, **kwargs)

    socket.socket.connect = guarded_connect
    socket.getaddrinfo = guarded_getaddrinfo

    import httpx
    from asgi_lifespan import LifespanManager
    from bench.fake_upstream import FakeUpstream
    from core.config import Settings
    from database.schema import upgrade_head
    from main_enterprise import create_app
    from tests.support.llm import router_yaml

    async def main():
        upstream = FakeUpstream()
        await upstream.start()
        config = sys.argv[1] + "/router.yaml"
        open(config, "w").write(router_yaml(upstream))
        url = f"sqlite+aiosqlite:///{sys.argv[1]}/db.sqlite"
        await asyncio.to_thread(upgrade_head, url)
        app = create_app(Settings(_env_file=None, database_url=url, router_config=config))
        statuses = []
        # Generous: on a loaded machine the start (litellm, the job queue) takes seconds
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=manager.app),
                                         base_url="http://t") as client:
                for model in ("claude", "primary"):
                    r = await client.post("/api/v1/chat/completions", json={
                        "model": model, "max_tokens": 20,
                        "messages": [{"role": "user", "content": "offline?"}]})
                    statuses.append(r.status_code)
            costs = app.state.services.router.costs.prices
        await upstream.stop()
        print(json.dumps({"attempts": attempts, "statuses": statuses,
                          "litellm": "litellm" in sys.modules,
                          "priced": sorted(k[1] for k in costs)}))

    asyncio.run(main())
""")


def test_no_network_at_import_or_run_time(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/bin:/bin",
            "FAKE_ANTHROPIC_KEY": "k",
            "PYTHONPATH": str(ROOT),
            "HOME": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], f"tried to reach the network: {report['attempts']}"
    assert report["statuses"] == [200, 200]
    assert report["litellm"] is False
    assert "claude-haiku-4-5" in report["priced"]
