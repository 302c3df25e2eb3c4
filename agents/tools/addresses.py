"""Which IP addresses a tool may connect to, and the vetted resolution of a host.

A tool request must never reach the gateway's own network: cloud metadata
(169.254.169.254), Redis and PostgreSQL on private addresses, the loopback. The rule
is judged on addresses, after resolution, so a public-looking name that resolves
inward is refused too; `vetted_addresses` resolves once and returns the addresses
the connection must use (no second lookup for a rebinding DNS server to answer).

Hosts written as numbers in the forms `inet_aton` accepts (`2130706433`, `0x7f.1`,
`0177.0.0.1`) are read as the address the C library would connect to, so they are
judged without a DNS query. IPv4 embedded in IPv6 (mapped `::ffff:a.b.c.d`, NAT64
`64:ff9b::/96`, 6to4 `2002::/16`) is judged as that IPv4 address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

from agents.tools.base import ToolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")  # not `is_private` in Python 3.11
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefused(ToolError):
    """The destination is on the gateway's side of the fence; the message names the rule."""


def parse_ip_host(host: str) -> IPAddress | None:
    """The address a literal `host` denotes (IPv6 without brackets, or any IPv4 form
    `inet_aton` accepts), or None for a name that needs resolving."""
    host = host.removesuffix(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return _inet_aton(host)


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """`a`, `a.b`, `a.b.c`, `a.b.c.d`, each part decimal, 0x-hex or 0-octal; the last
    part fills the remaining bytes (so `127.1` is 127.0.0.1)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        lowered = part.lower()
        try:
            if lowered.startswith("0x"):
                numbers.append(int(lowered[2:] or "0", 16))
            elif len(lowered) > 1 and lowered.startswith("0"):
                numbers.append(int(lowered[1:], 8))
            elif lowered.isdigit() and lowered.isascii():
                numbers.append(int(lowered))
            else:
                return None
        except ValueError:
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def judged_as(ip: IPAddress) -> IPAddress:
    """The address the rules judge: an IPv4 address carried inside IPv6 is that IPv4."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def refusal(ip: IPAddress, allowed: Sequence[IPNetwork]) -> str | None:
    """Why a tool may not connect to `ip` ("refused: ... is a private address"), or None."""
    ip = judged_as(ip)
    if any(ip.version == network.version and ip in network for network in allowed):
        return None
    if ip.is_unspecified:
        kind = "an unspecified"
    elif ip.is_loopback:
        kind = "a loopback"
    elif ip.is_link_local:
        kind = "a link-local"
    elif ip.is_multicast:
        kind = "a multicast"
    elif isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        kind = "a shared (CGNAT)"
    elif ip.is_private:
        kind = "a private"
    elif ip.is_reserved:
        kind = "a reserved"
    elif not ip.is_global:
        kind = "a non-public"
    else:
        return None
    return f"refused: {ip} is {kind} address"


def check_address(ip: IPAddress, allowed: Sequence[IPNetwork]) -> IPAddress:
    """`ip` as the connection must use it (a mapped address as its IPv4 form, which is
    the same host), or `AddressRefused`."""
    reason = refusal(ip, allowed)
    if reason is not None:
        raise AddressRefused(reason)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


async def vetted_addresses(host: str, port: int, allowed: Sequence[IPNetwork]) -> list[str]:
    """Resolve `host` once and return its addresses, or refuse if ANY is refused: a
    name with one public and one private address is refused, since the client might
    be steered to either."""
    literal = parse_ip_host(host)
    if literal is not None:
        return [str(check_address(literal, allowed))]
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ToolError(f"could not resolve {host}") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = check_address(ipaddress.ip_address(sockaddr[0]), allowed)
        if str(ip) not in addresses:
            addresses.append(str(ip))
    if not addresses:
        raise ToolError(f"could not resolve {host}")
    return addresses
