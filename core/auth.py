"""Who is calling: API keys, JWTs and the admin key, resolved to a Principal.

Verifying a key costs no database round trip per request: each worker caches
what it read about a key (or that it does not exist) for `AUTH_CACHE_SECONDS`
(2 s), so revoking or changing a key takes effect on every worker and every
instance within that time plus one lookup — well inside 5 s — with nothing to
broadcast and nothing that breaks when Redis is down. Values that cannot be a
key or a JWT are refused before any lookup.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import metrics
from core.errors import AuthenticationError, ServiceUnavailableError
from core.security import (
    TokenError,
    constant_time_equals,
    hash_api_key,
    looks_like_api_key,
    looks_like_jwt,
    verify_token,
)
from database.keys import key_by_hash, key_by_id
from database.models import ApiKey

log = structlog.get_logger("skygate.auth")

ANONYMOUS_TENANT = "anonymous"
ADMIN_SUBJECT = "admin"
CACHE_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What a worker remembers about a key between lookups."""

    id: str
    name: str
    tenant: str
    prefix: str
    allowed_models: frozenset[str] | None
    rpm: int | None
    rph: int | None
    tpm: int | None
    monthly_budget_usd: float | None
    expires_at: datetime | None
    state: str

    @classmethod
    def from_row(cls, row: ApiKey) -> KeyInfo:
        expires = row.expires_at
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)  # SQLite drops the zone; stored as UTC
        return cls(
            id=row.id,
            name=row.name,
            tenant=row.tenant,
            prefix=row.key_prefix,
            allowed_models=frozenset(row.allowed_models) if row.allowed_models else None,
            rpm=row.rpm_limit,
            rph=row.rph_limit,
            tpm=row.tpm_limit,
            monthly_budget_usd=(
                float(row.monthly_budget_usd) if row.monthly_budget_usd is not None else None
            ),
            expires_at=expires,
            state=row.state,
        )


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request, with the limits that apply to it."""

    tenant: str
    key_id: str | None
    admin: bool
    limit_key: str
    allowed_models: frozenset[str] | None = None
    rpm: int | None = None
    rph: int | None = None
    tpm: int | None = None
    monthly_budget_usd: float | None = None
    key_prefix: str | None = None

    def may_use(self, model_group: str) -> bool:
        return self.allowed_models is None or model_group in self.allowed_models


def reject(event: str, message: str, **fields: object) -> AuthenticationError:
    """Count and log a refused credential (never the credential itself)."""
    metrics.SECURITY_EVENTS.labels(event).inc()
    log.info("auth_rejected", reason=event, **fields)
    return AuthenticationError(message, headers={"WWW-Authenticate": "Bearer"})


class Authenticator:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        admin_key: str | None,
        jwt_secret: str | None,
        enabled: bool,
        cache_seconds: float = 2.0,
    ) -> None:
        self.sessions = sessions
        self.admin_key = admin_key
        self.jwt_secret = jwt_secret
        self.enabled = enabled
        self.cache_seconds = cache_seconds
        self._cache: OrderedDict[str, tuple[float, KeyInfo | None]] = OrderedDict()
        self._loading: dict[str, asyncio.Task[KeyInfo | None]] = {}
        self._generation = 0  # bumped by forget(): reads started before it are not kept

    async def authenticate(self, credential: str | None, *, client_ip: str) -> Principal:
        if not self.enabled:
            return Principal(
                tenant=ANONYMOUS_TENANT, key_id=None, admin=True, limit_key=f"ip:{client_ip}"
            )
        if not credential:
            raise reject(
                "auth_missing",
                "Missing credentials: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
            )
        if self.admin_key is not None and constant_time_equals(credential, self.admin_key):
            return Principal(tenant=ADMIN_SUBJECT, key_id=None, admin=True, limit_key="admin")
        if looks_like_api_key(credential):
            info = await self._lookup("hash:" + hash_api_key(credential))
            if info is None:
                raise reject("key_unknown", "Invalid API key.", key_prefix=credential[:12])
            return self._principal(info)
        if looks_like_jwt(credential) and self.jwt_secret:
            try:
                claims = verify_token(credential, secret=self.jwt_secret)
            except TokenError as exc:
                raise reject("jwt_invalid", str(exc)) from None
            if claims.subject == ADMIN_SUBJECT and claims.admin:
                return Principal(tenant=ADMIN_SUBJECT, key_id=None, admin=True, limit_key="admin")
            info = await self._lookup("id:" + claims.subject)
            if info is None or info.tenant != claims.tenant:
                raise reject("jwt_invalid", "The token's key no longer exists.")
            return self._principal(info)
        raise reject("auth_invalid", "Invalid API key.")

    def _principal(self, info: KeyInfo) -> Principal:
        if info.state == "revoked":
            raise reject("key_revoked", "This API key has been revoked.", key_id=info.id)
        if info.state != "active":
            raise reject("key_disabled", "This API key is disabled.", key_id=info.id)
        if info.expires_at is not None and info.expires_at <= datetime.now(UTC):
            raise reject("key_expired", "This API key has expired.", key_id=info.id)
        return Principal(
            tenant=info.tenant,
            key_id=info.id,
            admin=False,
            limit_key=f"key:{info.id}",
            allowed_models=info.allowed_models,
            rpm=info.rpm,
            rph=info.rph,
            tpm=info.tpm,
            monthly_budget_usd=info.monthly_budget_usd,
            key_prefix=info.prefix,
        )

    async def _lookup(self, cache_key: str) -> KeyInfo | None:
        """A key's record, at most `cache_seconds` old. An entry in its last
        quarter is served while one background read renews it, so a busy key
        never waits for the database; an expired or unknown one waits for a
        single read shared by every concurrent request (before, each request
        read it, and a burst stalled ~10 ms every 2 s)."""
        now = time.monotonic()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > now:
            if cached[0] - now < self.cache_seconds / 4 and cache_key not in self._loading:
                self._loading[cache_key] = asyncio.create_task(self._load(cache_key, cached))
            return cached[1]
        task = self._loading.get(cache_key)
        if task is None:
            task = self._loading[cache_key] = asyncio.create_task(self._load(cache_key, cached))
        return await asyncio.shield(task)  # a caller that goes away does not cancel the read

    async def _load(
        self, cache_key: str, cached: tuple[float, KeyInfo | None] | None
    ) -> KeyInfo | None:
        kind, _, value = cache_key.partition(":")
        generation = self._generation
        try:
            async with self.sessions() as session:
                row = await (
                    key_by_hash(session, key_hash=value)
                    if kind == "hash"
                    else key_by_id(session, key_id=value)
                )
        except Exception as exc:  # database down: serve what we knew, else 503
            if cached is not None:
                return cached[1]
            log.warning("auth_lookup_failed", error=type(exc).__name__)
            raise ServiceUnavailableError(
                "Credentials cannot be verified right now; retry shortly.",
                headers={"Retry-After": "2"},
            ) from None
        finally:
            if self._loading.get(cache_key) is asyncio.current_task():
                del self._loading[cache_key]
        info = KeyInfo.from_row(row) if row is not None else None
        if generation != self._generation:
            return info
        self._cache[cache_key] = (time.monotonic() + self.cache_seconds, info)
        self._cache.move_to_end(cache_key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return info

    def forget(self) -> None:
        """Drop this worker's cache (after an admin change made here)."""
        self._generation += 1
        self._cache.clear()
        self._loading.clear()
