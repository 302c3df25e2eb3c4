"""Redaction and the routing of every logger through structlog."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from core.observability.logging import REDACTED, Redactor, configure_logging
from core.observability.sentry import scrub_event


def test_values_under_sensitive_keys_are_masked_but_counts_are_not() -> None:
    scrubbed = Redactor().scrub(
        {
            "authorization": "Bearer abc",
            "x-api-key": "k",
            "jwt_secret_key": "s",
            "set-cookie": "c",
            "openai_api_key": "sk",
            "max_tokens": 100,
            "prompt_tokens": 7,
            "model": "gpt-4o",
        }
    )
    assert scrubbed["max_tokens"] == 100 and scrubbed["prompt_tokens"] == 7
    assert scrubbed["model"] == "gpt-4o"
    for key in ("authorization", "x-api-key", "jwt_secret_key", "set-cookie", "openai_api_key"):
        assert scrubbed[key] == REDACTED


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("calling with Authorization: Bearer abcdef123456", "abcdef123456"),
        ("key sk-proj-AbCdEf0123456789 rejected", "sk-proj-AbCdEf0123456789"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "eyJzdWIiOiJ4In0"),
        ("connect postgresql://user:hunter2pw@db:5432/x", "hunter2pw"),
        ("the configured secret is exact-configured-secret", "exact-configured-secret"),
    ],
)
def test_secrets_inside_free_text_are_masked(text: str, secret: str) -> None:
    redactor = Redactor(["exact-configured-secret"])
    assert secret not in redactor.scrub_text(text)


def test_asgi_header_pairs_are_masked() -> None:
    headers = [(b"authorization", b"Bearer zzz"), (b"x-api-key", b"k"), (b"accept", b"*/*")]
    scrubbed = Redactor().scrub({"headers": headers})["headers"]
    assert scrubbed[0][1] == REDACTED and scrubbed[1][1] == REDACTED
    assert scrubbed[2] == (b"accept", "*/*")


def test_stdlib_and_server_loggers_render_as_redacted_json(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json_logs=True, level="INFO", secrets=["configured-canary-secret"])
    logging.getLogger("gunicorn.error").info("worker got configured-canary-secret")
    logging.getLogger("uvicorn.error").warning("client sent Bearer leakedtoken123")
    structlog.contextvars.bind_contextvars(request_id="rid-1")
    try:
        structlog.get_logger("skygate.test").info("event", api_key="sk-should-not-appear")
    finally:
        structlog.contextvars.clear_contextvars()
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
    by_logger = {line["logger"]: line for line in lines}
    assert "configured-canary-secret" not in by_logger["gunicorn.error"]["event"]
    assert "leakedtoken123" not in by_logger["uvicorn.error"]["event"]
    assert by_logger["skygate.test"]["api_key"] == REDACTED
    assert by_logger["skygate.test"]["request_id"] == "rid-1"
    assert all("timestamp" in line and "level" in line for line in lines)


def test_litellms_filters_leave_no_marks_on_the_server_loggers_lines(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Importing litellm puts its secret filter on uvicorn's and other libraries'
    loggers; the filter stamps each record with an attribute of its own, which must
    not become a field of every server line (`"litellm_redacted": "<object ...>"`)."""
    from core.llm.litellm_import import litellm_module

    litellm_module()
    configure_logging(json_logs=True, level="INFO", secrets=[])
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    (line,) = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
    assert line["event"] == "Started server process [42]"
    assert set(line) == {"event", "level", "logger", "timestamp"}


def test_sentry_events_lose_bodies_cookies_and_secrets() -> None:
    event = {
        "request": {
            "data": '{"messages": "private"}',
            "cookies": {"s": "c"},
            "headers": {"Authorization": "Bearer x", "User-Agent": "sdk"},
        },
        "extra": {"api_key": "sk-abcdefgh12345678", "note": "Bearer abcdefghij"},
    }
    scrubbed = scrub_event(event, None)
    assert "data" not in scrubbed["request"] and "cookies" not in scrubbed["request"]
    assert scrubbed["request"]["headers"] == {"User-Agent": "sdk"}
    assert scrubbed["extra"]["api_key"] == REDACTED
    assert "abcdefghij" not in scrubbed["extra"]["note"]


def test_access_line_matches_structlog_lines_redacts_the_path_and_honours_the_level(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from core.observability.logging import access_line

    configure_logging(json_logs=True, level="INFO", secrets=["configured-secret-value"])
    structlog.contextvars.bind_contextvars(request_id="req-1")
    try:
        structlog.get_logger("skygate.access").info("request", method="GET", status=200)
        fields = {"request_id": "req-1", "method": "GET", "route": "<unmatched>", "status": 404}
        fields["duration_ms"] = 1.5
        access_line(
            logging.INFO, {**fields, "path": "/x/sk-proj-AbCdEf0123456789/configured-secret-value"}
        )
        access_line(logging.DEBUG, {**fields, "path": "/live"})
        echoed = {**fields, "request_id": "sk-proj-AbCdEf0123456789", "path": "/x"}
        access_line(logging.INFO, echoed)  # a client may send its key as X-Request-ID
    finally:
        structlog.contextvars.clear_contextvars()
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line]
    assert len(lines) == 3, "a DEBUG access line is dropped at LOG_LEVEL=INFO"
    by_structlog, fast, echoed_line = lines
    assert "AbCdEf0123456789" not in echoed_line["request_id"]
    assert set(fast) == set(by_structlog) | {"route", "duration_ms", "path"}
    assert fast["request_id"] == by_structlog["request_id"] == "req-1"
    assert (fast["level"], fast["logger"], fast["event"]) == ("info", "skygate.access", "request")
    assert fast["timestamp"].endswith("Z") and len(fast["timestamp"]) == len(
        by_structlog["timestamp"]
    )
    assert "AbCdEf0123456789" not in fast["path"] and "configured-secret-value" not in fast["path"]

    configure_logging(json_logs=True, level="WARNING")
    access_line(logging.INFO, {**fields, "path": "/x"})
    assert capfd.readouterr().err == "", "LOG_LEVEL=WARNING: no access lines"


CANARY = "configured-canary-9f8e7d"


@pytest.mark.parametrize("json_logs", [True, False], ids=["json", "console"])
def test_no_renderer_bypasses_the_chain(json_logs: bool, capfd: pytest.CaptureFixture[str]) -> None:
    """A secret reaches stderr by none of the paths a line can take: Skygate's
    structlog loggers, a library's stdlib logger, the servers' loggers, the access
    line, and exception tracebacks from structlog and from stdlib."""
    from core.observability.logging import access_line

    configure_logging(json_logs=json_logs, level="INFO", secrets=[CANARY])
    capfd.readouterr()
    log = structlog.get_logger("skygate.test")
    log.info("path-structlog " + CANARY, detail=f"bearer {CANARY}", nested={"x": [CANARY]})
    logging.getLogger("skygate.library").warning("path-stdlib %s", CANARY)
    logging.getLogger("uvicorn.error").info("path-uvicorn %s", CANARY)
    logging.getLogger("gunicorn.error").info("path-gunicorn %s", CANARY)
    access_line(logging.INFO, {"request_id": CANARY, "path": f"/path-access/{CANARY}"})
    try:
        raise RuntimeError(f"path-traceback-structlog {CANARY}")
    except RuntimeError as exc:
        log.error("failed", exc_info=exc)
    try:
        raise RuntimeError(f"path-traceback-stdlib {CANARY}")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("failed")
    err = capfd.readouterr().err
    paths = ["structlog", "stdlib", "uvicorn", "gunicorn", "access", "traceback-structlog"]
    for path in [*paths, "traceback-stdlib"]:
        assert f"path-{path}" in err, f"no line came by the {path} path"
    assert CANARY not in err
    assert err.count(REDACTED) >= 10  # message, detail, nested, 3 servers, 2 access, 2 tracebacks
    configure_logging(json_logs=True, level="INFO")
