"""The tool stage of a run: the tool calls of one model turn, checked, run and answered.

Each call is checked before it runs, in the order the model asked: past the run's
`max_tool_calls`, or the same tool with the same (canonical) arguments more than
`max_identical_tool_calls` times, the stage stops the run (`max_tool_calls`,
`repeated_tool_call`) and the calls from there on are not made. Arguments that fail the
tool's schema, and unknown tools, are answered with an error message for the model,
not run. Server-side tools run at most `max_parallel_tool_calls` at once, each within
`tool_timeout_seconds`; a tool's failure is the model's error message, never the run's.
Client tools pause the run until their outputs arrive (`WaitForOutputs`). Every output
is clipped to `max_tool_output_chars`, and every planned call gets its tool message, so
the conversation stays valid for the next turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from agents.events import EventLog
from agents.state import RunState, Stop, WaitForOutputs
from agents.tools.base import Tool, ToolContext, ToolError, canonical_arguments, validate_arguments
from agents.turns import call_view, tool_message

log = structlog.get_logger("skygate.agents.engine")  # the engine's: its log lines stay as they were
# A call to make: the model's call, its tool (None: unknown), its arguments (a str: why not).
Planned = tuple[dict[str, Any], Tool | None, dict[str, Any] | str]


class ToolStage:
    def __init__(self, *, tool_context: Callable[[RunState], ToolContext]) -> None:
        self.tool_context = tool_context

    async def run(
        self,
        state: RunState,
        events: EventLog,
        tools: dict[str, Tool],
        calls: list[dict[str, Any]],
        wait: WaitForOutputs,
    ) -> None:
        """The turn's calls, answered in the conversation; raises `Stop` after
        answering the ones made when a limit stopped the rest."""
        limits = state.limits
        planned: list[Planned] = []
        stop: Stop | None = None
        for call in calls:
            function = call.get("function") or {}
            name = str(function.get("name", ""))
            raw = function.get("arguments") or "{}"
            tool = tools.get(name)
            if stop is None and state.usage.tool_calls >= limits.max_tool_calls:
                stop = Stop("max_tool_calls")
            arguments: dict[str, Any] | str
            try:
                arguments = validate_arguments(tool, raw) if tool else f"unknown tool {name!r}"
            except ToolError as error:
                arguments = str(error)
            if stop is None and isinstance(arguments, dict):
                key = f"{name}:{canonical_arguments(arguments)}"
                if state.identical.get(key, 0) >= limits.max_identical_tool_calls:
                    stop = Stop("repeated_tool_call")
                else:
                    state.identical[key] = state.identical.get(key, 0) + 1
            if stop is not None:
                break
            state.usage.tool_calls += 1
            planned.append((call, tool, arguments))
            events.emit(
                "tool_call.created",
                {"turn": state.turn - 1, "tool_call": call_view(call, name)},
            )
        results = await self._execute(state, events, planned)
        client = [item for item in planned if item[1] is not None and item[1].client]
        if client and stop is None:
            outputs = await wait(state, [call_view(c, t.name) for c, t, _ in client if t])
            for call, tool, _arguments in client:
                output = outputs.get(str(call.get("id")), "")
                results[str(call.get("id"))] = self._clip(state, output)[0]
                events.emit(
                    "tool_call.completed",
                    {
                        "turn": state.turn - 1,
                        "tool_call_id": call.get("id"),
                        "name": tool.name if tool else "",
                        "output": results[str(call.get("id"))],
                        "error": False,
                    },
                )
        for call, _tool, _arguments in planned:
            state.messages.append(tool_message(call, results.get(str(call.get("id")), "")))
            state.new_messages.append(state.messages[-1])
        if stop is not None:
            raise stop

    async def _execute(
        self, state: RunState, events: EventLog, planned: list[Planned]
    ) -> dict[str, str]:
        """Run the server-side calls, at most `max_parallel_tool_calls` at once."""
        gate = asyncio.Semaphore(state.limits.max_parallel_tool_calls)
        results: dict[str, str] = {}

        async def one(
            call: dict[str, Any], tool: Tool | None, arguments: dict[str, Any] | str
        ) -> None:
            call_id = str(call.get("id"))
            error = True
            if isinstance(arguments, str):
                output = f"error: {arguments}"
            else:
                assert tool is not None
                async with gate:
                    try:
                        async with asyncio.timeout(state.limits.tool_timeout_seconds):
                            output = await tool.run(arguments, self.tool_context(state))
                        error = False
                    except ToolError as failure:
                        output = f"error: {failure}"
                    except TimeoutError:
                        output = (
                            f"error: the tool took longer than "
                            f"{state.limits.tool_timeout_seconds:g} s and was stopped"
                        )
                    except Exception as failure:  # a tool's bug is the model's error message
                        log.warning("tool_failed", tool=tool.name, error=type(failure).__name__)
                        output = "error: the tool failed"
            output, truncated = self._clip(state, output)
            results[call_id] = output
            events.emit(
                "tool_call.completed",
                {
                    "turn": state.turn - 1,
                    "tool_call_id": call_id,
                    "name": tool.name if tool else "",
                    "output": output,
                    "error": error,
                    "truncated": truncated,
                },
            )

        server = [(c, t, a) for c, t, a in planned if t is None or not t.client]
        if server:
            async with asyncio.TaskGroup() as group:
                for call, tool, arguments in server:
                    group.create_task(one(call, tool, arguments))
        return results

    def _clip(self, state: RunState, output: str) -> tuple[str, bool]:
        limit = state.limits.max_tool_output_chars
        if len(output) <= limit:
            return output, False
        return output[:limit] + f"\n[truncated: {len(output) - limit} more characters]", True
