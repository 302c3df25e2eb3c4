"""Sentry error reporting: on only when SENTRY_DSN is set, secrets scrubbed.

Events pass through the same redaction as log lines before they leave the
process, and request bodies, cookies and headers are never sent.
"""

from __future__ import annotations

from typing import Any

from core.config import Settings
from core.logging import redactor


def scrub_event(event: Any, _hint: Any) -> Any:
    """`before_send`: drop request bodies and cookies, redact everything else."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("data", None)
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {
                k: v
                for k, v in headers.items()
                if k.lower() in {"content-type", "user-agent", "x-request-id"}
            }
    return redactor.scrub(event)


def init_sentry(settings: Settings) -> bool:
    """Initialise Sentry when configured; True when it was."""
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.environment,
        release=f"skygate@{settings.version}",
        send_default_pii=False,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        max_request_body_size="never",
    )
    return True
