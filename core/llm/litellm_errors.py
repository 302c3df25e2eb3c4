"""What a litellm exception means for the router: a `ProviderError` by cause.

litellm turns every failure inside a call into its own exception tree, and the
class says little about the cause: an upstream 413 arrives as BadRequestError
(400), a refused connection as InternalServerError (500), and an ImportError
inside litellm (`No module named 'mcp'`) or a TypeError in its translation as
APIConnectionError (500). Read as a connect failure, that ImportError once cooled
a healthy Anthropic deployment down for every tenant. So the cause is read from
the chain litellm keeps (`__cause__`, else `__context__`), never from the class:

1. an `httpx.HTTPStatusError` in the chain: the upstream answered that status
   (its own status, body and headers, not litellm's remapping of them);
2. a timeout anywhere in the chain (litellm's, httpx's, the socket's): timeout;
3. a refused connection, DNS or TLS failure: connect; another transport error
   (a reset, a truncated body): cut;
4. a JSONDecodeError or UnicodeError: the upstream's bytes were not the JSON or
   text they should be (an answer, a header like `Retry-After: \xff`): garbage;
5. only litellm's own exceptions: litellm judged the answer itself (an error
   event in a stream, a parameter it refuses): their status, else garbage;
6. anything else (ImportError, TypeError, KeyError, ...): `local`, Skygate's
   side of the call, which never counts against the deployment's health.

Seen with litellm 1.x against fake Anthropic, Gemini and Cohere upstreams
(`tests/core/llm/test_errors_by_cause.py`).
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx

from core.llm.direct import upstream_message
from core.llm.litellm_import import litellm_module
from core.llm.retry_after import parse_retry_after
from core.llm.types import Deployment, ProviderError

MAX_MESSAGE = 2000
_MAX_CHAIN = 16
_CONNECT = (
    httpx.ConnectError,
    aiohttp.ClientConnectorError,
    ConnectionRefusedError,
    socket.gaierror,
    ssl.SSLError,
)
_TRANSPORT = (httpx.TransportError, aiohttp.ClientError, ConnectionError)


def provider_error(exc: BaseException, deployment: Deployment) -> ProviderError:
    """The `ProviderError` for an exception raised by (or under) a litellm call."""
    litellm = litellm_module()
    chain = list(_chain(exc))
    for link in chain:
        if isinstance(link, httpx.HTTPStatusError):
            return _status_error(link.response, exc)
    timeouts = (litellm.Timeout, httpx.TimeoutException, TimeoutError)
    if any(isinstance(link, timeouts) for link in chain):
        return ProviderError("timeout", f"{deployment.id} timed out")
    if any(isinstance(link, _CONNECT) for link in chain):
        return ProviderError("connect", f"cannot reach {deployment.id}: {_text(chain[-1])}")
    if any(isinstance(link, _TRANSPORT) for link in chain):
        return ProviderError("cut", f"{deployment.id} broke the connection: {_text(chain[-1])}")
    if any(isinstance(link, json.JSONDecodeError | UnicodeError) for link in chain):
        return ProviderError("garbage", f"{deployment.id} answered undecodable bytes")
    foreign = [link for link in chain if not type(link).__module__.startswith("litellm")]
    if not foreign:
        statuses = [s for s in (getattr(link, "status_code", None) for link in chain) if s]
        status = statuses[-1] if statuses else None  # the innermost: the provider's
        if isinstance(status, int) and 400 <= status <= 599:
            message = _quoted_message(str(getattr(exc, "message", "") or exc))
            return ProviderError("status", message, status=status, retry_after=_hint(exc))
        return ProviderError("garbage", f"{deployment.id} failed: {_text(exc)[:200]}")
    root = foreign[-1]
    return ProviderError("local", f"{deployment.id}: {type(root).__name__}: {_text(root)[:200]}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or during, outermost first."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _status_error(response: httpx.Response, exc: BaseException) -> ProviderError:
    try:
        raw = response.content
    except httpx.ResponseNotRead:
        raw = b""
    status = response.status_code
    message = upstream_message(raw) or f"The provider answered HTTP {status}."
    hint = parse_retry_after(response.headers)
    return ProviderError(
        "status", message, status=status, retry_after=hint if hint is not None else _hint(exc)
    )


def _hint(exc: BaseException) -> float | None:
    # litellm keeps the provider's headers here; its `exc.response` is often its own, empty
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    return parse_retry_after(headers) if headers is not None else None


def _quoted_message(text: str) -> str:
    """The provider's message inside litellm's text (`...Exception - {"error": ...}`),
    or litellm's first line when it quotes none."""
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        quoted = upstream_message(text[start : end + 1].encode())
        if quoted:
            return quoted
    return text.split("\n", 1)[0][:MAX_MESSAGE]


def _text(exc: BaseException) -> str:
    """The first line of an exception's text (litellm appends whole tracebacks)."""
    text = str(getattr(exc, "message", "") or exc)
    return text.split("\n", 1)[0]
