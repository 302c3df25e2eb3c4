"""Fixtures for the agents tests: the tool tests' HTTP server (`tests.support.echo_server`)
on 127.0.0.1 and ::1, and the tool contexts that reach it (or, by default, refuse it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest

from agents.tools import SafeHttp, ToolContext, ToolSettings
from tests.support.echo_server import EchoServer

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


async def _started(host: str) -> EchoServer:
    server = EchoServer(host=host)
    await server.start()
    return server


@pytest.fixture
async def echo_server() -> AsyncIterator[EchoServer]:
    started = await _started("127.0.0.1")
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def other_echo_server() -> AsyncIterator[EchoServer]:
    """A second origin (another port), for redirects that cross origins."""
    started = await _started("127.0.0.1")
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def echo_server_v6() -> AsyncIterator[EchoServer]:
    """A listener on ::1, to show a refused [::1] never reached it."""
    started = await _started("::1")
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
def tool_settings() -> ToolSettings:
    """The test server's network is exempt, as an operator would exempt an internal API."""
    return ToolSettings(allowed_networks=LOOPBACK)


@pytest.fixture
async def tool_ctx(tool_settings: ToolSettings) -> AsyncIterator[ToolContext]:
    http = SafeHttp(tool_settings)
    try:
        yield ToolContext(tenant="tenant-a", run_id="run-1", http=http)
    finally:
        await http.aclose()


@pytest.fixture
async def strict_tool_ctx() -> AsyncIterator[ToolContext]:
    """No exemptions: the production default."""
    http = SafeHttp(ToolSettings())
    try:
        yield ToolContext(tenant="tenant-a", run_id="run-1", http=http)
    finally:
        await http.aclose()
