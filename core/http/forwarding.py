"""The client's address behind reverse proxies: `X-Forwarded-For` by hop count.

Each proxy in front of Skygate appends the address it saw to `X-Forwarded-For`;
whatever stands to the left of those entries was written by the client and
proves nothing. So the client is the entry `FORWARDED_TRUSTED_HOPS` from the
right (Render's proxy is one hop: the last entry is the one it appended), and
only when the direct peer is one of `FORWARDED_ALLOW_IPS` (`*`: any peer, for
platforms such as Render whose proxy addresses are not published).

uvicorn's own proxy-header middleware is switched off in `core.serving.worker` and
`main_enterprise`: given `*`, it takes the *leftmost* entry, which the client
chooses — rotating it escaped per-address limits and forged the logged client.
The access line, the per-address rate limits and the failed-authentication
throttle all read `scope["client"]`, which is rewritten here once per request.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SCHEMES = frozenset({"http", "https", "ws", "wss"})


def _address(value: str) -> IPAddress | None:
    """An IP address from an `X-Forwarded-For` entry (`1.2.3.4`, `1.2.3.4:80`,
    `[::1]:80`, `::1`), or None for anything else."""
    value = value.strip()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


class ForwardedPolicy:
    """Which peers may speak for a client, and how many proxies stand in front."""

    def __init__(self, allow_ips: str | Iterable[str], *, hops: int) -> None:
        raw = allow_ips.split(",") if isinstance(allow_ips, str) else allow_ips
        entries = [e.strip() for e in raw if e.strip()]
        self.trust_all = "*" in entries
        self.hops = hops
        self.networks: list[IPNetwork] = []
        for entry in entries:
            if entry == "*":
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(
                    f"FORWARDED_ALLOW_IPS entry {entry!r} is not an IP address or network"
                ) from None
        self.trusted = lru_cache(maxsize=1024)(self._trusted)

    @property
    def active(self) -> bool:
        return self.hops > 0 and (self.trust_all or bool(self.networks))

    def _trusted(self, peer: str) -> bool:
        if self.trust_all:
            return True
        address = _address(peer)
        return address is not None and any(address in net for net in self.networks)

    def client(self, peer: str | None, forwarded_for: list[bytes]) -> str | None:
        """The client's address, or None to keep the peer's."""
        if not self.hops or not forwarded_for or peer is None or not self.trusted(peer):
            return None
        entries = b",".join(forwarded_for).decode("latin-1").split(",")
        # The last `hops` entries were appended by our proxies; fewer means fewer
        # proxies were passed, and every entry there is still one of theirs.
        chosen = _address(entries[max(len(entries) - self.hops, 0)])
        return str(chosen) if chosen is not None else None

    def scheme(self, peer: str | None, forwarded_proto: bytes | None) -> str | None:
        """The scheme the outermost trusted proxy saw (`X-Forwarded-Proto`), or None."""
        if not self.hops or forwarded_proto is None or peer is None or not self.trusted(peer):
            return None
        entries = forwarded_proto.decode("latin-1").split(",")
        proto = entries[max(len(entries) - self.hops, 0)].strip().lower()
        return proto if proto in _SCHEMES else None
