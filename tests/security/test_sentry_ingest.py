"""Finding 9: Sentry events carried secrets and request bodies.

The scrubber stopped at depth 6 while stack-frame variables sit at depth 7, so
a presented key and a credential went out unredacted, and frames carried the
request body. Here a local HTTP server is the Sentry ingest (the DSN points at
it); an app with canary secrets configured raises inside a route whose locals
and request hold them, and logs an error naming them. Every envelope is decoded:
events must arrive (so this can fail) and no canary may be in any of them.

Run in a subprocess: sentry-sdk patches process-wide state (starlette, logging).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.observability.logging import REDACTED, TRUNCATED, Redactor
from database.schema import upgrade_head

ROOT = Path(__file__).resolve().parents[2]
CANARIES = {
    "ADMIN": "canary-admin-key-4f1d9b2e7a",
    "PROVIDER": "canary-provider-key-8c3e5a1f",  # OPENAI_API_KEY: not key-shaped on purpose
    "TENANT": "sk-sg-canarytenantkey0123456789abcdef",  # presented: header, query, locals
    "BODY": "canary-body-text-5b7e9d13",
    "JWT_SECRET": "canary-jwt-secret-0123456789abcdef0123456789",
}


class Ingest(ThreadingHTTPServer):
    """Records every envelope POSTed to it, decoded."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), IngestHandler)
        self.envelopes: list[tuple[str, bytes]] = []


class IngestHandler(BaseHTTPRequestHandler):
    server: Ingest

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        encoding = (self.headers.get("content-encoding") or "").lower()
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]  # only if sentry-sdk chose it

            raw = brotli.decompress(raw)
        self.server.envelopes.append((self.path, raw))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    server = Ingest()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


SCRIPT = textwrap.dedent("""
    import asyncio, json, logging, sys
    import sentry_sdk
    from fastapi import FastAPI, Request
    from tests.support.app import make_settings, running_app

    canary = json.loads(sys.argv[1])
    settings = make_settings(
        database_url=sys.argv[2],
        sentry_dsn=sys.argv[3],
        admin_api_key=canary["ADMIN"],
        openai_api_key=canary["PROVIDER"],
        jwt_secret_key=canary["JWT_SECRET"],
    )

    def customize(app: FastAPI) -> None:
        @app.post("/boom")
        async def boom(request: Request) -> None:
            body = await request.body()  # a local holding the request body
            presented = request.headers["authorization"]  # and one the presented key
            credentials = {"admin": canary["ADMIN"], "provider": canary["PROVIDER"]}
            nested = {"a": {"b": {"c": {"d": {"e": {"f": {"g": [presented, body]}}}}}}}
            try:
                raise ValueError(f"provider said no to {canary['TENANT']} ({len(nested)})")
            except ValueError:  # a logged error with its traceback (and, once, its locals)
                logging.getLogger("skygate.test").exception(
                    "upstream refused %s for %s", canary["PROVIDER"], presented
                )
            raise RuntimeError(f"unhandled boom for {canary['TENANT']} ({len(body)} bytes)")

    async def main() -> None:
        async with running_app(settings, customize) as (_, client):
            response = await client.post(
                "/boom?api_key=" + canary["TENANT"],
                json={"messages": [{"role": "user", "content": canary["BODY"]}]},
                headers={
                    "Authorization": "Bearer " + canary["TENANT"],
                    "X-API-Key": canary["TENANT"],
                    "Cookie": "session=" + canary["BODY"],
                },
            )
            print("status", response.status_code, flush=True)
        assert sentry_sdk.get_client().is_active()
        sentry_sdk.flush(timeout=10)

    asyncio.run(main())
""")


def events_in(envelopes: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    """The `event` items of Sentry envelopes (header line, then item header and
    payload lines)."""
    events = []
    for _, raw in envelopes:
        lines = raw.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == "event":
                events.append(json.loads(payload))
    return events


def test_sentry_events_arrive_without_any_secret_or_body(ingest: Ingest, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/gateway.db"
    upgrade_head(url)
    dsn = f"http://public@127.0.0.1:{ingest.server_address[1]}/1"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(CANARIES), url, dsn],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "status 500" in result.stdout, result.stdout
    assert {path for path, _ in ingest.envelopes} == {"/api/1/envelope/"}
    events = events_in(ingest.envelopes)
    logged = [e for e in events if e.get("logger") == "skygate.test"]
    unhandled = [e for e in events if "unhandled boom" in json.dumps(e.get("exception"))]
    assert logged, f"the logged error did not arrive: {events}"
    everything = b"\n".join(raw for _, raw in ingest.envelopes).decode("utf-8", "replace")
    for name, secret in CANARIES.items():
        assert secret not in everything, f"{name} canary reached Sentry"
        assert secret[:20] not in everything, f"part of the {name} canary reached Sentry"
    assert unhandled, f"the route's unhandled exception did not arrive: {events}"
    for event in (logged[0], unhandled[0]):
        frames = event["exception"]["values"][-1]["stacktrace"]["frames"]  # type: ignore[index]
        assert any(frame.get("function") == "boom" for frame in frames), "the stack is reported"
        assert not any("vars" in frame for frame in frames), "frame variables are never sent"


def test_the_redactor_has_no_depth_limit_and_a_size_bound() -> None:
    redactor = Redactor(["exact-configured-secret"])
    deep: object = "sk-proj-deepsecret0123456789 and exact-configured-secret"
    for _ in range(10_000):  # far past any recursion limit
        deep = {"vars": [deep]}
    leaf = redactor.scrub(deep)
    while isinstance(leaf, dict):
        leaf = leaf["vars"][0]
    assert leaf == f"{REDACTED} and {REDACTED}"
    loop: dict[str, object] = {}
    loop["self"] = loop  # a cycle ends at the size bound, it does not hang
    scrubbed = redactor.scrub(loop)
    depth = 0
    while isinstance(scrubbed, dict):
        scrubbed, depth = scrubbed["self"], depth + 1
    assert scrubbed == TRUNCATED and depth > 1000
    pairs = redactor.scrub([("sk-proj-nameheld0123456789", "v"), (b"x-api-key", b"k")])
    assert "nameheld" not in json.dumps([[str(k), v] for k, v in pairs])
    assert pairs[1] == (b"x-api-key", REDACTED)
