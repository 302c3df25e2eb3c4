"""Finding 8: a forged X-Forwarded-For entry must not change who the client is.

Render's proxy appends the address it saw to whatever X-Forwarded-For the
client sent. With `FORWARDED_ALLOW_IPS=*` uvicorn took the leftmost entry —
the client's own — so rotating it escaped a per-address limit and forged the
logged client. The client is the entry `FORWARDED_TRUSTED_HOPS` from the right.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from core.config import Settings
from core.http.forwarding import ForwardedPolicy
from tests.support.gateway import GatewayProcess

REAL = "198.51.100.7"  # what "Render's proxy" appends: the address it saw


@pytest.mark.parametrize(
    ("allow", "hops", "peer", "header", "client"),
    [
        ("*", 1, "10.0.0.1", [b"203.0.113.9, 198.51.100.7"], REAL),
        ("*", 1, "10.0.0.1", [b"203.0.113.9", b"198.51.100.7"], REAL),  # two header lines
        ("*", 1, "10.0.0.1", [b"198.51.100.7"], REAL),
        ("*", 2, "10.0.0.1", [b"1.1.1.1, 203.0.113.9, 198.51.100.7"], "203.0.113.9"),
        ("*", 2, "10.0.0.1", [b"198.51.100.7"], REAL),  # fewer entries than hops
        ("*", 1, "10.0.0.1", [b"1.1.1.1, [2001:db8::1]:443"], "2001:db8::1"),
        ("*", 1, "10.0.0.1", [b"1.1.1.1, 198.51.100.7:5555"], REAL),
        ("*", 1, "10.0.0.1", [b"1.1.1.1, not-an-address"], None),  # keep the peer
        ("*", 1, "10.0.0.1", [b"1.1.1.1, "], None),
        ("127.0.0.1", 1, "10.0.0.1", [b"203.0.113.9"], None),  # untrusted peer
        ("10.0.0.0/8", 1, "10.4.5.6", [b"203.0.113.9, 198.51.100.7"], REAL),
        ("*", 0, "10.0.0.1", [b"203.0.113.9"], None),  # hops 0: headers ignored
    ],
)
def test_the_client_is_counted_from_the_right(
    allow: str, hops: int, peer: str, header: list[bytes], client: str | None
) -> None:
    policy = ForwardedPolicy(allow, hops=hops)
    assert policy.client(peer, header) == (client if policy.active else None)


def test_forwarded_proto_by_the_same_rule() -> None:
    policy = ForwardedPolicy("*", hops=1)
    assert policy.scheme("10.0.0.1", b"http, https") == "https"
    assert policy.scheme("10.0.0.1", b"gopher") is None
    assert ForwardedPolicy("127.0.0.1", hops=1).scheme("10.0.0.1", b"https") is None


def test_a_bad_allow_list_entry_stops_the_start() -> None:
    with pytest.raises(ValueError, match="FORWARDED_ALLOW_IPS"):
        Settings(_env_file=None, forwarded_allow_ips="127.0.0.1,not-a-network")


@pytest.mark.slow
def test_rotating_a_forged_entry_does_not_escape_the_per_address_limit(
    tmp_path: Path, sqlite_url: str
) -> None:
    """gunicorn as on Render (`*`, one hop): twenty forged leftmost entries in front of
    one real address are one client — its limit holds, and the access line names it."""
    gateway = GatewayProcess(
        {
            "DATABASE_URL": sqlite_url,
            "HOST": "127.0.0.1",
            "RATE_LIMIT_PER_MINUTE": "2",
            "WEB_CONCURRENCY": "1",
            "FORWARDED_ALLOW_IPS": "*",
            "FORWARDED_TRUSTED_HOPS": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        },
        tmp_path / "gateway.log",
    )
    try:
        gateway.start()
        with httpx.Client(base_url=gateway.base_url, timeout=10) as client:
            forged = [
                client.get(
                    "/api/v1/models", headers={"X-Forwarded-For": f"203.0.113.{i}, {REAL}"}
                ).status_code
                for i in range(10)
            ]
            other = client.get("/api/v1/models", headers={"X-Forwarded-For": "198.51.100.8"})
    finally:
        gateway.stop()
    assert forged.count(200) == 2 and forged.count(429) == 8, forged
    assert other.status_code == 200  # a different real client has its own limit
    clients = {
        line.get("client")
        for line in (json.loads(raw) for raw in gateway.logs().splitlines() if raw.startswith("{"))
        if line.get("route") == "/api/v1/models"
    }
    assert clients == {REAL, "198.51.100.8"}, clients
