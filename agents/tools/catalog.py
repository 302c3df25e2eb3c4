"""From an agent's tool specs to the tools its runs call."""

from __future__ import annotations

from collections.abc import Sequence

from agents.tools.base import Tool, ToolSettings
from agents.tools.builtins import CurrentTime, HttpFetch
from agents.tools.calculator import Calculator
from agents.tools.declared import ClientTool, HttpTool
from agents.tools.hosts import AllowList
from agents.tools.specs import ClientToolSpec, HttpFetchSpec, HttpToolSpec, ToolSpec, tool_name


def build_tools(specs: Sequence[ToolSpec], *, settings: ToolSettings) -> list[Tool]:
    """One tool per spec, in order; sizes and timeouts a spec leaves out come from
    `settings`. Two tools with one name is a ValueError (the model could not tell
    them apart)."""
    names = [tool_name(spec) for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"tool names must be unique; repeated: {', '.join(duplicates)}")
    return [_build(spec, settings) for spec in specs]


def _build(spec: ToolSpec, settings: ToolSettings) -> Tool:
    if spec == "calculator":
        return Calculator()
    if spec == "current_time":
        return CurrentTime()
    if isinstance(spec, HttpFetchSpec):
        return HttpFetch(
            hosts=AllowList.parse(spec.allowed_hosts),
            shown_hosts=spec.allowed_hosts,
            max_bytes=spec.max_bytes or settings.default_max_bytes,
            timeout=spec.timeout_seconds or settings.default_timeout_seconds,
        )
    if isinstance(spec, HttpToolSpec):
        return HttpTool(
            spec,
            max_bytes=spec.max_bytes or settings.default_max_bytes,
            timeout=spec.timeout_seconds or settings.default_timeout_seconds,
        )
    if isinstance(spec, ClientToolSpec):
        return ClientTool(spec)
    raise ValueError(f"unknown tool spec {spec!r}")  # unreachable for validated specs
