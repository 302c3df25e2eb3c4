"""Agent tools: the built-ins, declared HTTP and client tools, and SafeHttp.

The run engine uses `build_tools` (specs -> tools), `validate_arguments`,
`canonical_arguments`, `openai_tool` and a process-wide `SafeHttp` in each call's
`ToolContext`. Every byte a tool sends to the network goes through `SafeHttp`
(`agents.tools.http`); no other module here opens a connection.
"""

from __future__ import annotations

from agents.tools.base import (
    Tool,
    ToolContext,
    ToolError,
    ToolSettings,
    canonical_arguments,
    openai_tool,
    validate_arguments,
)
from agents.tools.catalog import build_tools
from agents.tools.http import HttpResult, SafeHttp
from agents.tools.specs import (
    ClientToolSpec,
    HttpFetchSpec,
    HttpToolSpec,
    ToolSpec,
    tool_name,
)

__all__ = [
    "ClientToolSpec",
    "HttpFetchSpec",
    "HttpResult",
    "HttpToolSpec",
    "SafeHttp",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolSettings",
    "ToolSpec",
    "build_tools",
    "canonical_arguments",
    "openai_tool",
    "tool_name",
    "validate_arguments",
]
