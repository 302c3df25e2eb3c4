"""The hosts a tool may reach, and the check of a URL against them.

An entry is `host` (ports 80 and 443), `host:port` (that port only) or `*.domain`
(any subdomain of `domain`, not `domain` itself). Both entries and URLs are compared
in one normal form: lower case, IDNA-encoded (`bücher.de` is `xn--bcher-kva.de`), no
trailing dot, IPv6 compressed. A host written as a number in some other form
(`2130706433`) matches only an entry written the same way; the address rules in
`addresses` judge what it points to either way.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from agents.tools.base import ToolError

_LABELS = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$")
_DEFAULT_PORTS = frozenset({80, 443})
SCHEMES = frozenset({"http", "https"})


def normal_host(raw: bytes | str) -> str:
    """The comparable form of a host as httpx parsed it (`URL.raw_host`)."""
    host = (raw.decode("ascii") if isinstance(raw, bytes) else raw).lower().removesuffix(".")
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        return host


def effective_port(url: httpx.URL) -> int:
    return url.port if url.port is not None else (443 if url.scheme == "https" else 80)


@dataclass(frozen=True, slots=True)
class HostRule:
    host: str  # normal form; for a wildcard, the parent domain
    wildcard: bool
    port: int | None  # None: 80 or 443

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        """One allow-list entry, or ValueError saying what is wrong with it."""
        text = entry.strip()
        wildcard = text.startswith("*.")
        try:
            # A scheme httpx has no default port for keeps an explicit `:80` visible.
            url = httpx.URL(f"skygate://{text.removeprefix('*.')}/")
        except httpx.InvalidURL:
            raise ValueError(f"{entry!r} is not a host or host:port") from None
        host = normal_host(url.raw_host)
        is_ip = _is_ip(host)
        if url.path != "/" or url.userinfo or url.query or url.fragment or not host:
            raise ValueError(f"{entry!r} is not a host or host:port (no scheme, path or user)")
        if not is_ip and not _LABELS.match(host):
            raise ValueError(f"{entry!r} is not a valid host name")
        if wildcard and is_ip:
            raise ValueError(f"{entry!r}: a wildcard needs a domain, not an address")
        if url.port is not None and not 1 <= url.port <= 65535:
            raise ValueError(f"{entry!r}: port must be 1-65535")
        return cls(host=host, wildcard=wildcard, port=url.port)

    def matches(self, host: str, port: int) -> bool:
        if self.port is None and port not in _DEFAULT_PORTS:
            return False
        if self.port is not None and port != self.port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


@dataclass(frozen=True, slots=True)
class AllowList:
    rules: tuple[HostRule, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        return cls(tuple(HostRule.parse(entry) for entry in entries))

    def check(self, url: httpx.URL) -> None:
        """Refuse (ToolError) a URL this tool may not fetch: not http(s), with a user
        name or password, or to a host:port no entry allows."""
        if url.scheme not in SCHEMES:
            raise ToolError(f"refused: scheme {url.scheme or '(none)'!r} is not http or https")
        if url.userinfo:
            raise ToolError("refused: a URL may not carry a user name or password")
        host, port = normal_host(url.raw_host), effective_port(url)
        if not host:
            raise ToolError("refused: the URL has no host")
        if not any(rule.matches(host, port) for rule in self.rules):
            shown = f"[{host}]" if ":" in host else host
            raise ToolError(f"refused: {shown}:{port} is not on this tool's allowed hosts")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_url(url: str) -> httpx.URL:
    """`url` as httpx reads it, or a ToolError the model can act on."""
    if len(url) > 8192:
        raise ToolError("refused: the URL is longer than 8192 characters")
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ToolError(f"invalid URL: {exc}") from None
