"""SafeHttp: the only way a tool reaches the network.

Every connection is made by `_VettingBackend`, an httpcore network backend that
resolves the host itself, refuses when any address is on the gateway's side (see
`addresses`), and connects to the vetted address, so a DNS answer cannot change
between the check and the connect. TLS still verifies the URL's host name (httpcore
passes it as the server name). Redirects are followed here, hop by hop, each hop
checked against the tool's allowed hosts before it is requested and against the
address rules when it connects. The body is streamed and cut at `max_bytes`, the
whole exchange (all hops, DNS, body) has one deadline, and only text bodies come
back. No proxy from the environment, no cookies kept between requests (the client
is shared by every tenant's runs).

Failures are `ToolError`s naming the rule or the network fault, never a traceback
and never a request header (declared tools carry secrets in them).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import http.cookiejar
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from agents.tools.addresses import AddressRefused, IPNetwork, vetted_addresses
from agents.tools.base import ToolError, ToolSettings
from agents.tools.hosts import AllowList, effective_port, normal_host, parse_url

USER_AGENT = "Skygate-agent-tools/1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TEXT_TYPES = frozenset({"application/json", "application/xml"})


@dataclass(frozen=True, slots=True)
class HttpResult:
    status: int
    url: str  # after redirects
    content_type: str
    text: str
    truncated: bool
    max_bytes: int

    def render(self) -> str:
        """The model's view: status line, body, and a note when the body was cut."""
        head = f"HTTP {self.status} {self.content_type}".rstrip()
        note = f"\n[truncated at {self.max_bytes} bytes]" if self.truncated else ""
        return f"{head}\n{self.text}{note}"


class SafeHttp:
    """One per process (the engine's); shared by every run. Close with `aclose()`."""

    def __init__(self, settings: ToolSettings) -> None:
        self._max_redirects = settings.max_redirects
        self._default_timeout = settings.default_timeout_seconds
        self._default_max_bytes = settings.default_max_bytes
        backend = _VettingBackend(settings.allowed_networks, httpcore.AnyIOBackend())
        self._client = httpx.AsyncClient(
            transport=_Transport(backend),
            trust_env=False,
            follow_redirects=False,
            # Shared by every tenant: one run's cookie must never ride on another's request.
            cookies=http.cookiejar.CookieJar(policy=_RefuseAll()),
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(
        self,
        url: str | httpx.URL,
        *,
        hosts: AllowList,
        method: str = "GET",
        params: Mapping[str, str | list[str]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
        timeout_seconds: float | None = None,
    ) -> HttpResult:
        """Request `url` (GET, or POST with a `json` body) and return its text.

        `headers` go only to the first URL's origin: a redirect elsewhere drops them,
        as browsers drop credentials."""
        timeout = timeout_seconds or self._default_timeout
        limit = max_bytes or self._default_max_bytes
        target = url if isinstance(url, httpx.URL) else parse_url(url)
        if params:
            target = target.copy_merge_params(params)
        try:
            async with asyncio.timeout(timeout):
                return await self._follow(target, hosts, method, json, headers, limit, timeout)
        except TimeoutError:
            raise ToolError(f"timed out after {timeout:g} s") from None
        except httpx.HTTPError as exc:  # a bad Location, a corrupt gzip body, ...
            # httpx's messages name the URL or the fault, never a request header.
            raise ToolError(f"request failed: {_reason(exc)}") from None

    async def _follow(
        self,
        target: httpx.URL,
        hosts: AllowList,
        method: str,
        body: Any,
        headers: Mapping[str, str] | None,
        max_bytes: int,
        seconds: float,
    ) -> HttpResult:
        origin = _origin(target)
        for _hop in range(self._max_redirects + 1):
            hosts.check(target)
            request = self._client.build_request(
                method,
                target,
                json=body,
                headers=headers if _origin(target) == origin else None,
                timeout=httpx.Timeout(seconds),
            )
            response = await self._client.send(request, stream=True)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    target = target.join(response.headers["location"])  # httpx refused a bad one
                    if response.status_code == 303 or (
                        response.status_code in (301, 302) and method == "POST"
                    ):
                        method, body = "GET", None  # what every client does
                    continue
                return await _read(response, max_bytes)
            finally:
                await response.aclose()
        raise ToolError(f"refused: more than {self._max_redirects} redirects")


async def _read(response: httpx.Response, max_bytes: int) -> HttpResult:
    content_type = response.headers.get("content-type", "")
    mime = content_type.split(";", 1)[0].strip().lower()
    if not _is_text(mime):
        shown = mime or "none"
        raise ToolError(f"refused: content type {shown} is not text (text/*, JSON or XML)")
    chunks: list[bytes] = []
    size, truncated = 0, False
    async for chunk in response.aiter_bytes():  # decompressed: the cap holds for gzip too
        room = max_bytes - size
        if len(chunk) > room:
            chunks.append(chunk[:room])
            truncated = True
            break
        chunks.append(chunk)
        size += len(chunk)
    text = _decoder(response.charset_encoding).decode(b"".join(chunks), final=not truncated)
    return HttpResult(
        status=response.status_code,
        url=str(response.url),
        content_type=mime,
        text=text,
        truncated=truncated,
        max_bytes=max_bytes,
    )


def _is_text(mime: str) -> bool:
    return (
        mime.startswith("text/")
        or mime in _TEXT_TYPES
        or mime.endswith("+json")
        or mime.endswith("+xml")
    )


def _decoder(charset: str | None) -> codecs.IncrementalDecoder:
    """A decoder for the declared charset (UTF-8 when absent or unknown). Incremental,
    so a character cut by the size cap is dropped instead of mangled."""
    try:
        factory = codecs.getincrementaldecoder(charset or "utf-8")
    except LookupError:
        factory = codecs.getincrementaldecoder("utf-8")
    return factory(errors="replace")


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, normal_host(url.raw_host), effective_port(url)


class _RefuseAll(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class _VettingBackend(httpcore.AsyncNetworkBackend):
    """Resolve, vet, connect to the vetted address. Unix sockets are refused."""

    def __init__(self, allowed: Iterable[IPNetwork], inner: httpcore.AsyncNetworkBackend) -> None:
        self._allowed = tuple(allowed)
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature, by keyword)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await vetted_addresses(host, port, self._allowed)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # vetted_addresses never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("refused: unix sockets are not reachable by tools")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _Transport(httpx.AsyncBaseTransport):
    """httpx over an httpcore pool that connects through `_VettingBackend`. (httpx's
    own transport has no parameter for a network backend.)"""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=backend,
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _network_errors(request.url):
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, request.url),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes], url: httpx.URL) -> None:
        self._stream = stream
        self._url = url

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _network_errors(self._url):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        closer = getattr(self._stream, "aclose", None)
        if closer is not None:
            await closer()


@contextlib.contextmanager
def _network_errors(url: httpx.URL) -> Iterator[None]:
    """httpcore's failures as ToolErrors naming the host (never the request)."""
    where = f"{normal_host(url.raw_host)}:{effective_port(url)}"
    try:
        yield
    except httpcore.TimeoutException:
        raise ToolError(f"timed out talking to {where}") from None
    except httpcore.ConnectError as exc:
        raise ToolError(f"could not connect to {where}: {_reason(exc)}") from None
    except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
        raise ToolError(f"connection to {where} failed: {type(exc).__name__}") from None
    except httpcore.UnsupportedProtocol:
        raise ToolError(f"refused: unsupported scheme for {where}") from None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
