"""The built-in tools besides the calculator: `current_time` and `http_fetch`."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agents.tools.base import ToolContext, ToolError
from agents.tools.hosts import AllowList


class CurrentTime:
    name = "current_time"
    description = "The current date and time (ISO 8601) in an IANA time zone, UTC by default."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "description": "IANA time zone name, e.g. Europe/Paris (default UTC)",
            }
        },
        "additionalProperties": False,
    }
    client = False

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        name = arguments.get("timezone") or "UTC"
        if not isinstance(name, str) or len(name) > 64:
            raise ToolError("timezone must be an IANA time zone name such as Europe/Paris")
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            # ValueError: not a zone key at all (`../etc`, an absolute path).
            raise ToolError(f"unknown time zone {name!r} (use an IANA name)") from None
        return datetime.now(zone).isoformat(timespec="seconds")


class HttpFetch:
    """GET a URL on the agent's allowed hosts; the text of the answer."""

    name = "http_fetch"
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"url": {"type": "string", "description": "an http or https URL"}},
        "required": ["url"],
        "additionalProperties": False,
    }
    client = False

    def __init__(
        self, *, hosts: AllowList, shown_hosts: tuple[str, ...], max_bytes: int, timeout: float
    ) -> None:
        self.hosts = hosts
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.description = (
            "Fetch a web page or API answer with GET and return its text (first "
            f"{max_bytes} bytes). Only these hosts are reachable: {', '.join(shown_hosts)}."
        )

    def __repr__(self) -> str:
        return f"HttpFetch(hosts={self.hosts!r}, max_bytes={self.max_bytes})"

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        url = arguments.get("url")
        if not isinstance(url, str):
            raise ToolError("url must be a string")
        result = await ctx.http.fetch(
            url, hosts=self.hosts, max_bytes=self.max_bytes, timeout_seconds=self.timeout
        )
        return result.render()
