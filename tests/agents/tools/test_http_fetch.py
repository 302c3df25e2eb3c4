"""The http_fetch built-in and SafeHttp under it: what it may reach (allowed hosts,
loopback, private and metadata addresses, every redirect hop) and what it brings back
(truncated, timed out, text only, no cookies, no headers across origins).

Network tests talk to a real server on 127.0.0.1 (`tests.support.echo_server`, started
by tests/agents/conftest.py). Its network is exempt only where a test says so
(`tool_ctx`); `strict_tool_ctx` has the production default, no exemption.
A refusal is shown twice: by its message, which names the rule, and, where a listener
exists, by that listener never accepting.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from agents.tools import ToolContext, ToolError
from agents.tools.hosts import AllowList
from tests.support.agents import call, fetcher
from tests.support.echo_server import EchoServer


# -- http_fetch: what it may reach ---------------------------------------------------
async def test_fetches_an_allowed_host(echo_server: EchoServer, tool_ctx: ToolContext) -> None:
    for host in ("127.0.0.1", "localhost"):
        tool = fetcher(f"{host}:{echo_server.port}")
        output = await call(tool, tool_ctx, url=f"http://{host}:{echo_server.port}/text")
        assert output == "HTTP 200 text/plain\nhello from the test server"
    redirect = f"http://localhost:{echo_server.port}/redirect?to=/text"
    followed = await call(tool, tool_ctx, url=redirect)
    assert followed.endswith("hello from the test server")  # a redirect on the list is followed


async def test_refuses_hosts_not_on_the_list(
    echo_server: EchoServer, tool_ctx: ToolContext
) -> None:
    tool = fetcher(f"127.0.0.1:{echo_server.port}", "*.example.org")
    refused = {
        "http://example.com/": "example.com:80 is not on this tool's allowed hosts",
        "http://example.org/": "example.org:80 is not on",  # *.domain is subdomains only
        "http://a.example.org:8080/": "a.example.org:8080 is not on",  # no port: 80/443 only
        f"http://localhost:{echo_server.port}/text": f"localhost:{echo_server.port} is not on",
        f"http://2130706433:{echo_server.port}/text": "is not on",  # matched as written
        f"http://user:pw@127.0.0.1:{echo_server.port}/text": "user name or password",
        f"ftp://127.0.0.1:{echo_server.port}/text": "scheme 'ftp' is not http or https",
        "not a url at all": "refused",
    }
    for url, message in refused.items():
        with pytest.raises(ToolError, match=message):
            await call(tool, tool_ctx, url=url)
    assert echo_server.connections == 0


def test_host_list_normal_form() -> None:
    hosts = AllowList.parse(["Bücher.DE", "*.Example.org.", "[::1]:8080"])
    hosts.check(httpx.URL("https://xn--bcher-kva.de/"))
    hosts.check(httpx.URL("http://deep.sub.EXAMPLE.org/"))
    hosts.check(httpx.URL("http://[0:0::1]:8080/"))
    with pytest.raises(ValueError, match="not a valid host name"):
        AllowList.parse(["exa mple.com"])


async def test_refuses_loopback_without_the_exemption(
    echo_server: EchoServer, echo_server_v6: EchoServer, strict_tool_ctx: ToolContext
) -> None:
    port, port6 = echo_server.port, echo_server_v6.port
    cases = {
        f"http://127.0.0.1:{port}/text": "127.0.0.1 is a loopback address",
        f"http://localhost:{port}/text": "127.0.0.1 is a loopback address",  # after DNS
        f"http://2130706433:{port}/text": "127.0.0.1 is a loopback address",
        f"http://0x7f.1:{port}/text": "127.0.0.1 is a loopback address",
        f"http://0177.1:{port}/text": "127.0.0.1 is a loopback address",
        f"http://127.1:{port}/text": "127.0.0.1 is a loopback address",
        f"http://[::ffff:127.0.0.1]:{port}/text": "127.0.0.1 is a loopback address",
        f"http://[::1]:{port6}/text": "::1 is a loopback address",
    }
    hosts = [f"{u.split('/')[2]}" for u in cases]
    tool = fetcher(*hosts)
    for url, message in cases.items():
        with pytest.raises(ToolError, match=f"^refused: {re.escape(message)}$"):
            await call(tool, strict_tool_ctx, url=url)
    assert echo_server.connections == 0
    assert echo_server_v6.connections == 0


async def test_refuses_private_and_metadata_addresses(tool_ctx: ToolContext) -> None:
    cases = {
        "http://10.0.0.1/": "10.0.0.1 is a private address",
        "http://192.168.1.1/": "192.168.1.1 is a private address",
        "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is a link-local address",
        "http://100.64.0.1/": "100.64.0.1 is a shared (CGNAT) address",
        "http://0.0.0.0/": "0.0.0.0 is an unspecified address",
        "http://[fe80::1]/": "fe80::1 is a link-local address",
        "http://[::ffff:10.0.0.1]/": "10.0.0.1 is a private address",
    }
    tool = fetcher(*(url.split("/")[2] for url in cases))
    started = time.perf_counter()
    for url, message in cases.items():
        with pytest.raises(ToolError, match=f"^refused: {re.escape(message)}$"):
            await call(tool, tool_ctx, url=url)
    assert time.perf_counter() - started < 1.0  # refused before any connect attempt


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://10.0.0.5/", "10.0.0.5 is a private address"),
        ("http://internal.example.com/", "internal.example.com:80 is not on this tool's"),
        ("http://127.0.0.1:{other}/text", "127.0.0.1:{other} is not on this tool's"),
    ],
)
async def test_redirects_are_checked_at_every_hop(
    target: str,
    message: str,
    echo_server: EchoServer,
    other_echo_server: EchoServer,
    tool_ctx: ToolContext,
) -> None:
    target = target.format(other=other_echo_server.port)
    message = message.format(other=other_echo_server.port)
    tool = fetcher(f"127.0.0.1:{echo_server.port}", "169.254.169.254", "10.0.0.5")
    with pytest.raises(ToolError, match=message):
        await call(tool, tool_ctx, url=f"{echo_server.url}/redirect?to={target}")
    assert len(echo_server.requests) == 1
    assert other_echo_server.connections == 0


async def test_too_many_redirects(echo_server: EchoServer, tool_ctx: ToolContext) -> None:
    tool = fetcher(f"127.0.0.1:{echo_server.port}")
    with pytest.raises(ToolError, match="^refused: more than 3 redirects$"):
        await call(tool, tool_ctx, url=f"{echo_server.url}/loop")
    assert [r.target for r in echo_server.requests] == [
        "/loop",
        *(f"/loop?n={n}" for n in (1, 2, 3)),
    ]


# -- http_fetch: what it brings back -------------------------------------------------
async def test_large_body_is_truncated(echo_server: EchoServer, tool_ctx: ToolContext) -> None:
    tool = fetcher(f"127.0.0.1:{echo_server.port}", max_bytes=1000)
    output = await call(tool, tool_ctx, url=f"{echo_server.url}/big?n=5000000")
    assert output == "HTTP 200 text/plain\n" + "a" * 1000 + "\n[truncated at 1000 bytes]"
    whole = await call(tool, tool_ctx, url=f"{echo_server.url}/big?n=1000")
    assert "truncated" not in whole


async def test_slow_server_times_out(echo_server: EchoServer, tool_ctx: ToolContext) -> None:
    tool = fetcher(f"127.0.0.1:{echo_server.port}", timeout_seconds=0.3)
    started = time.perf_counter()
    with pytest.raises(ToolError, match="timed out"):
        await call(tool, tool_ctx, url=f"{echo_server.url}/slow")
    assert time.perf_counter() - started < 2.0


async def test_only_text_comes_back(echo_server: EchoServer, tool_ctx: ToolContext) -> None:
    tool = fetcher(f"127.0.0.1:{echo_server.port}")
    with pytest.raises(ToolError, match="content type application/octet-stream is not text"):
        await call(tool, tool_ctx, url=f"{echo_server.url}/binary")
    with pytest.raises(ToolError, match="request failed: Invalid URL in location header"):
        await call(tool, tool_ctx, url=f"{echo_server.url}/redirect?to=http://[::1")


async def test_no_cookies_are_kept(echo_server: EchoServer, tool_ctx: ToolContext) -> None:
    """The client is shared by every tenant: one run's cookie must not reach another's."""
    tool = fetcher(f"127.0.0.1:{echo_server.port}")
    await call(tool, tool_ctx, url=f"{echo_server.url}/cookie")
    await call(tool, tool_ctx, url=f"{echo_server.url}/echo")
    assert "cookie" not in echo_server.requests[-1].headers


async def test_headers_do_not_follow_a_redirect_to_another_origin(
    echo_server: EchoServer, other_echo_server: EchoServer, tool_ctx: ToolContext
) -> None:
    hosts = AllowList.parse(
        [f"127.0.0.1:{echo_server.port}", f"127.0.0.1:{other_echo_server.port}"]
    )
    result = await tool_ctx.http.fetch(
        f"{echo_server.url}/redirect?to={other_echo_server.url}/echo",
        hosts=hosts,
        headers={"Authorization": "Bearer credential-for-the-first-origin"},
    )
    assert result.status == 200
    assert echo_server.requests[0].headers["authorization"].endswith("first-origin")
    assert "authorization" not in other_echo_server.requests[0].headers
