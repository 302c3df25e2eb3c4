"""Structured logging: configured once, JSON in production, console on a TTY.

Every log record — Skygate's own (structlog), gunicorn's and uvicorn's (stdlib
`logging`) — passes through the same processor chain, so each line carries the
`request_id` bound in contextvars and goes through secret redaction. Redaction
masks values under sensitive keys (authorization, api keys, cookies, tokens,
passwords, provider keys), bearer tokens and `sk-` keys inside any string, and
the exact values of the configured secrets.
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

REDACTED = "[REDACTED]"

# A key is sensitive when its last word names a credential: `authorization`,
# `x-api-key`, `jwt_secret_key`, `set-cookie`, `access_token` — but not
# `max_tokens` or `prompt_tokens`.
_SENSITIVE_KEY = re.compile(
    r"(?i)(^|[-_])(authorization|api[-_]?key|secret([-_]key)?|password|passwd|token|"
    r"cookie|credentials?|dsn|private[-_]?key|master[-_]?key|jwt)$"
)
# (pattern, replacement): bearer/basic credentials, OpenAI-style keys, JWTs,
# and passwords inside URLs.
_SECRET_PATTERNS = [
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + REDACTED),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"(://[^:/@\s]+:)[^@\s]+@"), r"\1" + REDACTED + "@"),
]
# Every pattern above needs one of these to match; most log values contain none.
_MAYBE_SECRET = re.compile(r"(?i)bearer|basic|[spr]k-|eyJ|://")
_MAX_DEPTH = 6


class Redactor:
    """A structlog processor that removes secrets from every event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        values = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._exact = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def scrub_text(self, text: str) -> str:
        if self._exact is not None:
            text = self._exact.sub(REDACTED, text)
        if _MAYBE_SECRET.search(text) is None:  # one cheap scan instead of four
            return text
        for pattern, replacement in _SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def scrub(self, value: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH or value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, bytes):
            return self.scrub_text(value.decode("utf-8", "replace"))
        if isinstance(value, MutableMapping) or isinstance(value, dict):
            return {
                k: (
                    REDACTED
                    if isinstance(k, str) and _SENSITIVE_KEY.search(k) and v
                    else self.scrub(v, depth + 1)
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            pairs = all(isinstance(i, tuple | list) and len(i) == 2 for i in value)
            if pairs and value:
                return [
                    (k, REDACTED)
                    if isinstance(k, str | bytes)
                    and _SENSITIVE_KEY.search(k.decode("latin-1") if isinstance(k, bytes) else k)
                    else (k, self.scrub(v, depth + 1))
                    for k, v in value
                ]
            return [self.scrub(v, depth + 1) for v in value]
        return value

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        return self.scrub(event_dict)  # type: ignore[no-any-return]


redactor = Redactor()


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)
    return event_dict


def shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def _final_processors(json_logs: bool) -> list[Processor]:
    if json_logs:
        return [
            structlog.processors.format_exc_info,
            redactor,
            structlog.processors.JSONRenderer(),
        ]
    return [redactor, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]


def formatter_config(json_logs: bool) -> dict[str, Any]:
    """A `logging.config` formatter entry rendering stdlib records like structlog's."""
    return {
        "()": structlog.stdlib.ProcessorFormatter,
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_final_processors(json_logs),
        ],
        "foreign_pre_chain": shared_processors(),
    }


def logging_dict(*, json_logs: bool, level: str) -> dict[str, Any]:
    """The stdlib logging config: one stderr handler, everything through structlog."""
    quiet = "WARNING" if level != "DEBUG" else "DEBUG"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structlog": formatter_config(json_logs)},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "structlog",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "gunicorn.error": {"handlers": ["default"], "level": level, "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "sqlalchemy.engine": {"level": "WARNING"},
            "asyncio": {"level": "WARNING"},
            "alembic": {"level": "WARNING"},
            "aiosqlite": {"level": "WARNING"},
            "httpx": {"level": quiet},
            "httpcore": {"level": "WARNING"},
            "LiteLLM": {"level": "WARNING"},
            "multipart": {"level": "WARNING"},
        },
    }


class LineWriter:
    """structlog's output for Skygate's own loggers: one rendered line to stderr.

    Skygate's loggers do not go through stdlib `logging`: a record, a handler lock
    and a formatter per line cost about as much as the rest of a cache hit (the
    benchmark served twice the cache hits with the access line switched off). The
    stream is looked up at each write, so redirected stderr (tests) is honoured.
    """

    def __init__(self, name: str = "skygate") -> None:
        self.name = name

    def msg(self, line: str | bytes) -> None:
        stream = sys.stderr
        if isinstance(line, bytes):
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                stream.flush()
                buffer.write(line + b"\n")
                buffer.flush()
                return
            line = line.decode()
        stream.write(line + "\n")
        stream.flush()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


def _line_writer(*args: object) -> LineWriter:
    return LineWriter(str(args[0]) if args else "skygate")


class _Output:
    """What `configure_logging` chose, for `access_line`."""

    json = False
    level = logging.INFO


_output = _Output()
_writer = LineWriter()
_ACCESS_LOGGER = "skygate.access"
_access = structlog.get_logger(_ACCESS_LOGGER)


def access_line(level: int, fields: dict[str, Any]) -> None:
    """One access line per request. In JSON mode it is rendered here, with the
    same keys and redaction as structlog's chain would give, at a fraction of the
    cost (it runs on every request; docs/PERFORMANCE.md). The caller passes the
    request's context (`request_id`) in `fields`: collecting structlog's
    contextvars walks every context variable of the task, ~10 us in a worker.
    Every text value is scanned for secrets: the path and the request id come
    from the client."""
    if level < _output.level:
        return
    name = logging.getLevelName(level).lower()
    if not _output.json:
        getattr(_access, name)("request", **fields)
        return
    event: dict[str, Any] = {"event": "request"}
    for key, value in fields.items():
        event[key] = redactor.scrub_text(value) if isinstance(value, str) else value
    event["level"] = name
    event["logger"] = _ACCESS_LOGGER
    event["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    _writer.msg(orjson.dumps(event))


def configure_logging(*, json_logs: bool, level: str, secrets: Iterable[str] = ()) -> None:
    """Configure structlog and stdlib logging. Safe to call more than once."""
    redactor.set_secrets(secrets)
    _output.json = json_logs
    _output.level = logging.getLevelNamesMapping()[level]
    logging.config.dictConfig(logging_dict(json_logs=json_logs, level=level))
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=orjson.dumps)
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            *([structlog.processors.format_exc_info] if json_logs else []),
            redactor,
            renderer,
        ],
        logger_factory=_line_writer,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        cache_logger_on_first_use=True,
    )
