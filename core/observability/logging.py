"""Structured logging: configured once, JSON in production, console on a TTY.

Every log line — Skygate's own (structlog), gunicorn's, uvicorn's and the
libraries' (stdlib `logging`), and the per-request access line — passes through
one processor chain (`Chain`), so each carries the `request_id` (and, when the
request is traced, its `trace_id`: both bound by `core.http.context`) and goes
through secret redaction once. Redaction
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
_MAX_REMEMBERED = 4096  # scrubbed short texts, and key verdicts, kept at most
_MAX_REMEMBERED_LENGTH = 64
_KEY_VERDICTS: dict[str, bool] = {}


def _sensitive(key: object) -> bool:
    """Whether values under `key` are masked. Keys are names chosen by code and
    repeat on every line; the regex costs ~1 us a key, the remembered verdict ~0.05."""
    if not isinstance(key, str):
        return False
    verdict = _KEY_VERDICTS.get(key)
    if verdict is None:
        verdict = _SENSITIVE_KEY.search(key) is not None
        if len(_KEY_VERDICTS) < _MAX_REMEMBERED:
            _KEY_VERDICTS[key] = verdict
    return verdict


class Redactor:
    """A structlog processor that removes secrets from every event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._texts: dict[str, str] = {}
        self.set_secrets(secrets)

    def set_secrets(self, secrets: Iterable[str]) -> None:
        self._values = {s for s in secrets if s}
        values = sorted(self._values, key=len, reverse=True)
        self._exact = re.compile("|".join(re.escape(v) for v in values)) if values else None
        self._texts = {}  # verdicts made without the new secrets

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Also mask these (provider keys a router config names by variable)."""
        added = {s for s in secrets if s and len(s) >= 6} - self._values
        if added:
            self.set_secrets(self._values | added)

    def scrub_text(self, text: str) -> str:
        """`text` with secrets masked. Short texts repeat (methods, routes, addresses,
        logger names): their results are remembered, ~0.1 us instead of ~1.3 us, in a
        table emptied when it fills, so unique values (request ids) cannot grow it."""
        if len(text) <= _MAX_REMEMBERED_LENGTH:
            known = self._texts.get(text)
            if known is not None:
                return known
            if len(self._texts) >= _MAX_REMEMBERED:
                self._texts = {}
            clean = self._texts[text] = self._scrub_text(text)
            return clean
        return self._scrub_text(text)

    def _scrub_text(self, text: str) -> str:
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
        """The chain's redaction step, with `scrub`'s rules. A log event is mostly flat
        text and numbers: those are scrubbed here in one pass (the general walk costs
        ~1 us a value more); nested values go through `scrub` together (one budget)."""
        clean: EventDict = {}
        nested: dict[str, Any] = {}
        texts, verdicts = self._texts, _KEY_VERDICTS  # inlined lookups: ~40% of its cost
        for key, value in event_dict.items():
            sensitive = verdicts.get(key)
            if sensitive is None:
                sensitive = _sensitive(key)
            if sensitive and value:
                clean[key] = REDACTED
            elif type(value) is str:
                known = texts.get(value)
                clean[key] = known if known is not None else self.scrub_text(value)
            elif value is None or isinstance(value, bool | int | float):
                clean[key] = value
            else:
                clean[key] = nested[key] = value  # the place is kept; replaced below
        if nested:
            clean.update(self.scrub(nested))
        return clean


redactor = Redactor()


def _scrub_mapping(mapping: Mapping[Any, Any], stack: list[tuple[Any, Any, Any]]) -> dict[Any, Any]:
    """A new dict: values under sensitive keys masked, the others queued on `stack`.
    Keys are kept: they are names chosen by code (log fields, Sentry's event
    schema, filtered headers), and scrubbing each would double a log line's cost."""
    copy: dict[Any, Any] = {}
    for key, child in mapping.items():
        if isinstance(key, str) and child and _sensitive(key):
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
        if _sensitive(decoded):
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


# Attributes other libraries put on stdlib records, which `ExtraAdder` would make
# fields: uvicorn's ANSI-coloured copy of the message, and the stamp litellm's secret
# filter (on uvicorn's and other loggers once litellm is imported) leaves on each record.
_FOREIGN_EXTRAS = ("color_message", "litellm_redacted")


def _drop_foreign_extras(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for name in _FOREIGN_EXTRAS:
        event_dict.pop(name, None)
    return event_dict


def _as_text(_: WrappedLogger, __: str, rendered: Any) -> str:
    """stdlib handlers write text; the JSON renderer gives bytes (orjson)."""
    return rendered.decode() if isinstance(rendered, bytes) else str(rendered)


class Chain:
    """The one processor chain. Every line goes through `steps` and then `render`:

    - Skygate's structlog loggers: the context merge, `steps`, `render`;
    - stdlib records (gunicorn, uvicorn, libraries) through `ProcessorFormatter`:
      the same, then `_as_text`;
    - the access line (`access_line`): `steps` and `render` on fields that carry
      their context already (collecting structlog's contextvars walks every
      context variable of the task, ~10 us in a worker).

    Exceptions become text (`format_exc_info`) before redaction, in the console too,
    so a secret in an exception's message or a traceback is masked: the console
    renderer's own traceback printing ran after the redactor and printed it as it
    was. The time is added after redaction: it is ours, and scanning it would cost
    every line a text scan.
    """

    def __init__(self, *, json_logs: bool) -> None:
        self.json_logs = json_logs
        self.steps: tuple[Processor, ...] = (
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _drop_foreign_extras,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redactor,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        )
        self.render: Processor = (
            structlog.processors.JSONRenderer(serializer=orjson.dumps)
            if json_logs
            else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        )

    def structlog_processors(self) -> list[Processor]:
        return [structlog.contextvars.merge_contextvars, *self.steps, self.render]

    def formatter_config(self) -> dict[str, Any]:
        """A `logging.config` formatter entry: stdlib records through this chain."""
        return {
            "()": structlog.stdlib.ProcessorFormatter,
            "foreign_pre_chain": [structlog.contextvars.merge_contextvars, *self.steps],
            "processors": [
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                self.render,
                _as_text,
            ],
        }

    def line(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> Any:
        """One rendered line for an event that already carries its context."""
        for step in self.steps:
            event_dict = step(logger, method, event_dict)  # type: ignore[assignment]
        return self.render(logger, method, event_dict)


def formatter_config(json_logs: bool) -> dict[str, Any]:
    return Chain(json_logs=json_logs).formatter_config()


def logging_dict(*, json_logs: bool, level: str) -> dict[str, Any]:
    """The stdlib logging config: one stderr handler, everything through the chain."""
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

    chain = Chain(json_logs=False)
    level = logging.INFO


_output = _Output()
_access = LineWriter("skygate.access")
_LEVEL_NAMES = {level: logging.getLevelName(level).lower() for level in range(0, 60, 10)}


def access_line(level: int, fields: dict[str, Any], *, event: str = "request") -> None:
    """One access line per request (or WebSocket session), through the chain like
    every other line. The caller passes the request's context (`request_id`) in
    `fields` (see `Chain`). Every text value is scanned for secrets: the path and
    the request id come from the client."""
    if level < _output.level:
        return
    method = _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()
    _access.msg(_output.chain.line(_access, method, {"event": event, **fields}))


def configure_logging(*, json_logs: bool, level: str, secrets: Iterable[str] = ()) -> None:
    """Configure structlog and stdlib logging. Safe to call more than once."""
    redactor.set_secrets(secrets)
    chain = Chain(json_logs=json_logs)
    _output.chain = chain
    _output.level = logging.getLevelNamesMapping()[level]
    logging.config.dictConfig(logging_dict(json_logs=json_logs, level=level))
    structlog.configure(
        processors=chain.structlog_processors(),
        logger_factory=_line_writer,
        wrapper_class=structlog.make_filtering_bound_logger(_output.level),
        cache_logger_on_first_use=True,
    )
