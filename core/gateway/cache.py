"""The response cache: key, get, set. The only module that knows its Redis keys.

Exact match, shared by every worker and instance through Redis, with an
in-process LRU used whenever Redis is absent or its circuit is open. With Redis
up, the LRU also keeps what this worker recently read or wrote for
`NEAR_TTL_SECONDS`, so a popular answer costs no Redis round trip (entries
never change under a key, so the copy can only be up to that much older than
Redis's expiry). The key is
a SHA-256 over a versioned canonical form (sorted-key JSON) of the tenant, the
endpoint, the model group after alias resolution, and every request parameter
except those that cannot change the output (`stream`, `stream_options`,
`user`, `metadata`, `store`). Two tenants never share an entry, and a streamed
and a non-streaming request with the same parameters share one. What may be
stored (no errors, no truncated streams, no filtered answers, an answer
assembled from a stream only with every field a non-streaming one has: see
`core.gateway.streams`) is decided by the caller; this module only stores bytes.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from core.infra.redis import ResilientRedis
from core.observability import metrics

# 2: entries written under 1 may be answers assembled from streams without their
# logprobs (and other fields the assembler dropped); they are never read again.
# 3: entries written under 2 may hold answers outside OpenAI's schema (litellm's
# `tool_calls: null`, no `refusal`); since then providers store only conformant ones.
KEY_VERSION = 3
KEY_PREFIX = f"skygate:cache:v{KEY_VERSION}:"
NON_OUTPUT_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store", "model"})
MAX_ENTRY_BYTES = 1024 * 1024
MAX_TTL_SECONDS = 7 * 24 * 3600
NEAR_TTL_SECONDS = 10
CacheStatus = Literal["hit", "miss", "bypass"]

_REDIS_FAILED = object()


def cache_key(*, tenant: str, endpoint: str, group: str, body: dict[str, Any]) -> str:
    canonical = {
        "v": KEY_VERSION,
        "tenant": tenant,
        "endpoint": endpoint,
        "group": group,
        "params": {k: v for k, v in body.items() if k not in NON_OUTPUT_FIELDS},
    }
    digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return KEY_PREFIX + digest


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    """What the client asked of the cache for this request."""

    lookup: bool = True
    store: bool = True
    ttl: int | None = None

    @classmethod
    def from_headers(cls, cache_control: str | None, ttl_header: str | None) -> CacheDirectives:
        tokens = {t.strip().lower() for t in (cache_control or "").split(",")}
        ttl = None
        if ttl_header and ttl_header.strip().isdigit():
            ttl = min(int(ttl_header.strip()), MAX_TTL_SECONDS)
        return cls(
            lookup="no-cache" not in tokens,
            store="no-store" not in tokens,
            ttl=ttl if ttl and ttl > 0 else None,
        )


class LocalLRU:
    """A bounded in-process LRU with per-entry expiry."""

    def __init__(self, max_entries: int = 2048, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return value

    def set(self, key: str, value: bytes, ttl: int) -> None:
        if key in self.entries:
            self._drop(key)
        self.entries[key] = (time.monotonic() + ttl, value)
        self.bytes += len(value)
        while self.entries and (
            len(self.entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            self._drop(next(iter(self.entries)))

    def _drop(self, key: str) -> None:
        _, value = self.entries.pop(key)
        self.bytes -= len(value)


class ResponseCache:
    def __init__(self, redis: ResilientRedis, *, enabled: bool, ttl: int) -> None:
        self.redis = redis
        self.enabled = enabled
        self.ttl = ttl
        self.local = LocalLRU()
        self.hits = 0
        self.misses = 0

    @property
    def backend(self) -> str:
        if not self.enabled:
            return "disabled"
        return "redis" if self.redis.usable else "memory"

    def _count(self, hit: bool, backend: str) -> None:
        if hit:
            self.hits += 1
            metrics.CACHE_HITS.labels(backend).inc()
        else:
            self.misses += 1
            metrics.CACHE_MISSES.labels(backend).inc()
        metrics.CACHE_HIT_RATE.set(self.hit_rate)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return round(self.hits / total, 4) if total else 0.0

    async def get(self, key: str) -> bytes | None:
        value: Any = self.local.get(key)
        backend = "memory"
        if value is None and self.redis.configured:
            value = await self.redis.command("GET", key, fallback=_REDIS_FAILED)
            backend = "redis"
            if value is _REDIS_FAILED:
                value = None
                backend = "memory"
            elif isinstance(value, bytes):
                self.local.set(key, value, min(NEAR_TTL_SECONDS, self.ttl))
        self._count(value is not None, backend)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: int | None = None) -> None:
        if len(value) > MAX_ENTRY_BYTES:
            return
        seconds = ttl or self.ttl
        if self.redis.configured:
            ok = await self.redis.command("SET", key, value, "EX", seconds, fallback=_REDIS_FAILED)
            if ok is not _REDIS_FAILED:
                self.local.set(key, value, min(NEAR_TTL_SECONDS, seconds))
                return
        self.local.set(key, value, seconds)

    def stats(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "backend": self.backend,
            "redis_state": self.redis.state,
            "hit_rate": self.hit_rate,
            "total_hits": self.hits,
            "total_misses": self.misses,
            "connection_pool_size": self.redis.pool_size,
            "local_entries": len(self.local.entries),
            "ttl_seconds": self.ttl,
        }
