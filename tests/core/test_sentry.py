"""Sentry starts only with SENTRY_DSN, tagged with environment and release, and
scrubs events (run in a subprocess: sentry-sdk patches process-wide state)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, sentry_sdk
    from core.config import Settings
    from core.sentry import init_sentry, scrub_event
    off = init_sentry(Settings(_env_file=None))
    active_before = sentry_sdk.get_client().is_active()
    sent = []
    on = init_sentry(Settings(_env_file=None, environment="staging",
                              sentry_dsn="https://publickey@127.0.0.1:9/1"))
    client = sentry_sdk.get_client()
    event = client.options["before_send"]({"request": {"headers": {
        "Authorization": "Bearer sk-leak-1234567890"}, "data": "body"},
        "extra": {"note": "sk-proj-abcdefgh12345678"}}, None)
    print(json.dumps({"off": off, "active_before": active_before, "on": on,
                      "active": client.is_active(),
                      "environment": client.options["environment"],
                      "release": client.options["release"],
                      "pii": client.options["send_default_pii"],
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
    scrubbed = json.dumps(report["scrubbed"])
    assert "sk-leak" not in scrubbed and "sk-proj" not in scrubbed and "body" not in scrubbed
