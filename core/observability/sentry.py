"""Sentry error reporting: on only when SENTRY_DSN is set, and no secret or
request body ever leaves in an event.

What an event may carry, and why:
- no stack-frame variables (`include_local_variables=False`): frames hold the
  request body, the presented key and provider credentials in their locals,
  and no scrubber can recognise a prompt or a customer's document. File, line,
  function and source context are what a bug report needs. `scrub_event` also
  drops `vars` from every frame, in case an integration adds them;
- no request body, cookies, query string or environment, and of the request
  headers only content-type, user-agent and x-request-id;
- no command line (the argv integration is off): `gunicorn -e NAME=value`
  puts settings there;
- everything left (messages, exception values, breadcrumbs, tags, contexts)
  passes through the log redactor at any depth: values under sensitive keys,
  bearer tokens, `sk-` keys, JWTs, URL passwords and the exact configured
  secrets are masked.
"""

from __future__ import annotations

import sys
from typing import Any

from core.config import Settings
from core.observability.logging import redactor

_KEPT_HEADERS = frozenset({"content-type", "user-agent", "x-request-id"})
_REQUEST_DROPPED = ("data", "cookies", "query_string", "env")


def scrub_event(event: Any, _hint: Any) -> Any:
    """`before_send`/`before_send_transaction`: drop bodies, frame variables and
    all but three headers, then redact everything else."""
    if not isinstance(event, dict):
        return event
    request = event.get("request")
    if isinstance(request, dict):
        for key in _REQUEST_DROPPED:
            request.pop(key, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {
                k: v for k, v in headers.items() if str(k).lower() in _KEPT_HEADERS
            }
        else:
            request.pop("headers", None)
    for frame in _frames(event):
        frame.pop("vars", None)
    extra = event.get("extra")
    if isinstance(extra, dict):
        extra.pop("sys.argv", None)
    return redactor.scrub(event)


def report_exception(exc: BaseException) -> None:
    """Send an exception the app answered itself (its 500) to Sentry, when Sentry
    is on: the error handler catches it, so no integration sees it escape."""
    if "sentry_sdk" in sys.modules:  # never imported: Sentry is off, nothing to do
        import sentry_sdk

        sentry_sdk.capture_exception(exc)


def _frames(event: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stack frame of an event: its exceptions', its threads' and its own."""
    traces: list[Any] = [event.get("stacktrace")]
    for section in ("exception", "threads"):
        container = event.get(section)
        values = container.get("values") if isinstance(container, dict) else None
        for value in values if isinstance(values, list) else ():
            if isinstance(value, dict):
                traces.append(value.get("stacktrace"))
    frames: list[dict[str, Any]] = []
    for trace in traces:
        items = trace.get("frames") if isinstance(trace, dict) else None
        frames += [f for f in items if isinstance(f, dict)] if isinstance(items, list) else []
    return frames


def init_sentry(settings: Settings) -> bool:
    """Initialise Sentry when configured; True when it was."""
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.argv import ArgvIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.environment,
        release=f"skygate@{settings.version}",
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        traces_sample_rate=settings.sentry_traces_sample_rate,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        disabled_integrations=[ArgvIntegration()],
    )
    return True
