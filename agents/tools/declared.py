"""Tools an agent declares: HTTP tools (a URL template on one host) and client tools.

An HTTP tool's header values may hold secrets: they are read from the environment
when the tool runs, sent only to the tool's own origin, and never shown: not in
repr(), not in an error, and not in the tool's output (a server that echoes a
header back has the value replaced by `[redacted]` before the model sees it).
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote, urlunsplit

from pydantic import SecretStr

from agents.tools.base import ToolContext, ToolError
from agents.tools.hosts import AllowList
from agents.tools.specs import ENV_REF, ClientToolSpec, HttpToolSpec, sendable_header_value

REDACTED = "[redacted]"
_MIN_REDACTED_CHARS = 6  # shorter values are not secrets, and replacing them would garble text


class HttpTool:
    client = False

    def __init__(self, spec: HttpToolSpec, *, max_bytes: int, timeout: float) -> None:
        self.name = spec.name
        self.description = spec.description
        self.parameters: dict[str, Any] = spec.parameters
        self.method = spec.method
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._template = spec.template
        self._hosts = AllowList((self._template.host,))
        self._headers: tuple[tuple[str, SecretStr], ...] = tuple(spec.headers.items())

    def __repr__(self) -> str:
        return f"HttpTool(name={self.name!r}, method={self.method!r}, url={self._url_shown()!r})"

    def _url_shown(self) -> str:
        t = self._template
        return urlunsplit((t.scheme, t.netloc, t.path, t.query, ""))

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        headers, secrets = self._resolve_headers()
        template = self._template
        path = template.path
        for name in template.placeholders:
            path = path.replace("{" + name + "}", _path_segment(name, arguments.get(name)))
        rest = {k: v for k, v in arguments.items() if k not in template.placeholders}
        url = urlunsplit((template.scheme, template.netloc, path, template.query, ""))
        if self.method == "GET":
            params = {k: _query_value(v) for k, v in rest.items() if v is not None}
            result = await ctx.http.fetch(
                url,
                hosts=self._hosts,
                params=params,
                headers=headers,
                max_bytes=self.max_bytes,
                timeout_seconds=self.timeout,
            )
        else:
            result = await ctx.http.fetch(
                url,
                hosts=self._hosts,
                method="POST",
                json=rest,
                headers=headers,
                max_bytes=self.max_bytes,
                timeout_seconds=self.timeout,
            )
        return _redact(result.render(), secrets)

    def _resolve_headers(self) -> tuple[dict[str, str], list[str]]:
        """Header values with `${NAME}` replaced from the environment, read now so a
        rotated secret is picked up; and every value to keep out of the output."""
        resolved: dict[str, str] = {}
        secrets: list[str] = []
        for name, secret in self._headers:
            template = secret.get_secret_value()
            missing = [ref for ref in ENV_REF.findall(template) if ref not in os.environ]
            if missing:
                raise ToolError(
                    f"tool {self.name} is not configured: "
                    f"environment variable {missing[0]} is not set"
                )
            unsendable = [
                ref
                for ref in ENV_REF.findall(template)
                if not sendable_header_value(os.environ[ref])
            ]
            if unsendable:
                raise ToolError(
                    f"tool {self.name} is not configured: environment variable {unsendable[0]} "
                    "holds a value a header cannot carry (a line break or non-ASCII)"
                )
            value = ENV_REF.sub(lambda match: os.environ[match.group(1)], template)
            resolved[name] = value
            secrets.append(value)
            secrets.extend(os.environ[ref] for ref in ENV_REF.findall(template))
        return resolved, secrets


def _path_segment(name: str, value: Any) -> str:
    """One argument as a percent-encoded path segment: `/` and `?` cannot change the
    path's shape, and `.`/`..` cannot climb out of it."""
    if value is None:
        raise ToolError(f"argument {name} is required (it is part of the URL)")
    text = _scalar_text(name, value)
    if text in ("", ".", ".."):
        raise ToolError(f"argument {name} may not be {text!r} (it is a URL path segment)")
    return quote(text, safe="")


def _scalar_text(name: str, value: Any) -> str:
    if isinstance(value, bool | str | int | float):
        return _scalar(value)
    raise ToolError(f"argument {name} must be a string or a number (it is part of the URL)")


def _scalar(value: bool | str | int | float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _query_value(value: Any) -> str | list[str]:
    """A query parameter: scalars as text (JSON spelling for booleans), a list of
    scalars as a repeated parameter, anything else as compact JSON."""
    if isinstance(value, bool | str | int | float):
        return _scalar(value)
    if isinstance(value, list) and all(isinstance(v, bool | str | int | float) for v in value):
        return [_scalar(v) for v in value]
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= _MIN_REDACTED_CHARS:
            text = text.replace(secret, REDACTED)
    return text


class ClientTool:
    """Executed by the API client: the engine pauses the run, never calls `run`."""

    client = True

    def __init__(self, spec: ClientToolSpec) -> None:
        self.name = spec.name
        self.description = spec.description
        self.parameters: dict[str, Any] = spec.parameters

    def __repr__(self) -> str:
        return f"ClientTool(name={self.name!r})"

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        raise ToolError(f"{self.name} is executed by the client, not by the gateway")
