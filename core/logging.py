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
from collections.abc import Callable, Iterable, Mapping
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
# Every pattern above needs `k-`, `://`, `bearer`, `basic` or `eyj` (case aside)
# to match, and most values hold none: five `in` tests on the lowered text cost
# ~0.5 us for a short value, the case-insensitive regex alternation they replace
# ~2 us (and ~180 us for 2000 characters), measured on the 2-core CI machine.
# Values scrubbed per event before the rest is dropped: a Sentry event with its
# stack frames is a few thousand; a log line a few dozen.
_MAX_NODES = 50_000
TRUNCATED = "[TRUNCATED]"


class Redactor:
    """A structlog processor that removes secrets from every event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        self._values = {s for s in secrets if s}
        values = sorted(self._values, key=len, reverse=True)
        self._exact = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Also mask these (provider keys a router config names by variable)."""
        added = {s for s in secrets if s and len(s) >= 6} - self._values
        if added:
            self.set_secrets(self._values | added)

    def scrub_text(self, text: str) -> str:
        if self._exact is not None:
            text = self._exact.sub(REDACTED, text)
        low = text.lower()
        if not ("k-" in low or "://" in low or "bearer" in low or "basic" in low or "eyj" in low):
            return text  # none of _SECRET_PATTERNS can match
        for pattern, replacement in _SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def scrub(self, value: Any) -> Any:
        """A copy of `value` with secrets masked at every depth.

        Iterative, so no nesting is too deep to scrub (Sentry's stack-frame
        variables sit at depth 7 and once went out unredacted past a depth cap).
        What bounds the work is size: past `_MAX_NODES` values the rest is
        replaced by `[TRUNCATED]`, never sent as it was. Numbers, booleans and
        None are kept; objects of other types are kept as they are (renderers and
        Sentry turn them into text later)."""
        holder: list[Any] = [None]
        stack: list[tuple[Any, Any, Any]] = [(holder, 0, value)]
        budget = _MAX_NODES
        while stack:
            parent, slot, item = stack.pop()
            if item is None or isinstance(item, bool | int | float):
                parent[slot] = item
                continue
            budget -= 1
            if budget < 0:
                parent[slot] = TRUNCATED
            elif isinstance(item, str):
                parent[slot] = self.scrub_text(item)
            elif isinstance(item, bytes):
                parent[slot] = self.scrub_text(item.decode("utf-8", "replace"))
            elif isinstance(item, Mapping):
                parent[slot] = _scrub_mapping(item, stack)
            elif isinstance(item, list | tuple):
                parent[slot] = _scrub_sequence(item, stack, self.scrub_text)
            else:
                parent[slot] = item
        return holder[0]

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        return self.scrub(event_dict)  # type: ignore[no-any-return]


redactor = Redactor()


def _scrub_mapping(mapping: Mapping[Any, Any], stack: list[tuple[Any, Any, Any]]) -> dict[Any, Any]:
    """A new dict: values under sensitive keys masked, the others queued on `stack`.
    Keys are kept: they are names chosen by code (log fields, Sentry's event
    schema, filtered headers), and scrubbing each would double a log line's cost."""
    copy: dict[Any, Any] = {}
    for key, child in mapping.items():
        if isinstance(key, str) and _SENSITIVE_KEY.search(key) and child:
            copy[key] = REDACTED
        else:
            copy[key] = None
            stack.append((copy, key, child))
    return copy


def _scrub_sequence(
    items: list[Any] | tuple[Any, ...],
    stack: list[tuple[Any, Any, Any]],
    text: Callable[[str], str],
) -> list[Any]:
    """A new list, its items queued on `stack`. A list of (name, value) pairs with
    text names (ASGI headers) stays a list of pairs, with the values of sensitive
    names masked; a bytes name is kept as bytes unless it held a secret."""
    copy: list[Any] = [None] * len(items)
    pairs = bool(items) and all(
        isinstance(i, tuple | list) and len(i) == 2 and isinstance(i[0], str | bytes) for i in items
    )
    for index, child in enumerate(items):
        if not pairs:
            stack.append((copy, index, child))
            continue
        name, inner = child
        decoded = name.decode("latin-1") if isinstance(name, bytes) else name
        if _SENSITIVE_KEY.search(decoded):
            copy[index] = (name, REDACTED)
            continue
        clean = text(decoded)
        stack.append((_PairSlot(copy, index, name if clean == decoded else clean), 0, inner))
    return copy


class _PairSlot:
    """Where a pair's scrubbed value goes: storing it stores the (name, value) tuple."""

    __slots__ = ("_items", "_index", "_name")

    def __init__(self, items: list[Any], index: int, name: Any) -> None:
        self._items, self._index, self._name = items, index, name

    def __setitem__(self, _slot: int, value: Any) -> None:
        self._items[self._index] = (self._name, value)


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
