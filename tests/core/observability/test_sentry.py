"""Sentry starts only with SENTRY_DSN, tagged with environment and release, and
scrubs events: no frame variables, bodies, query strings or command line, and
secrets masked at any depth (run in a subprocess: sentry-sdk patches
process-wide state). What reaches a real ingest: tests/security/test_sentry_ingest.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = textwrap.dedent("""
    import json, sentry_sdk
    from core.config import Settings
    from core.observability.sentry import init_sentry, scrub_event
    off = init_sentry(Settings(_env_file=None))
    active_before = sentry_sdk.get_client().is_active()
    sent = []
    on = init_sentry(Settings(_env_file=None, environment="staging",
                              sentry_dsn="https://publickey@127.0.0.1:9/1"))
    client = sentry_sdk.get_client()
    deep = "sk-deep-abcdefgh12345678"
    for _ in range(40):
        deep = {"level": [deep]}
    frame = {"function": "boom", "vars": {"body": "the body", "key": "plain"}}
    event = client.options["before_send"]({"request": {"headers": {
        "Authorization": "Bearer sk-leak-1234567890", "User-Agent": "sdk"}, "data": "body",
        "query_string": "api_key=plainsecretvalue"},
        "exception": {"values": [{"stacktrace": {"frames": [frame]}}]},
        "threads": {"values": [{"stacktrace": {"frames": [dict(frame)]}}]},
        "extra": {"note": "sk-proj-abcdefgh12345678", "deep": deep,
                  "sys.argv": ["gunicorn", "-e", "plainsecretvalue"]}}, None)
    print(json.dumps({"off": off, "active_before": active_before, "on": on,
                      "active": client.is_active(),
                      "environment": client.options["environment"],
                      "release": client.options["release"],
                      "pii": client.options["send_default_pii"],
                      "locals": client.options["include_local_variables"],
                      "integrations": sorted(client.integrations),
                      "scrubbed": event}))
    client.close(timeout=0)
""")


def test_sentry_only_with_a_dsn_and_scrubbed() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["off"] is False and report["active_before"] is False
    assert report["on"] is True and report["active"] is True
    assert report["environment"] == "staging"
    assert report["release"].startswith("skygate@")
    assert report["pii"] is False
    assert report["locals"] is False, "frame variables hold bodies and keys"
    assert "argv" not in report["integrations"]
    scrubbed = json.dumps(report["scrubbed"])
    assert "sk-leak" not in scrubbed and "sk-proj" not in scrubbed and "body" not in scrubbed
    assert "sk-deep" not in scrubbed, "scrubbing has no depth limit"
    assert "plainsecretvalue" not in scrubbed  # the query string and the command line go
    assert '"vars"' not in scrubbed and '"function": "boom"' in scrubbed
    assert report["scrubbed"]["request"]["headers"] == {"User-Agent": "sdk"}
