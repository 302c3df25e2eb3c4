"""Who is calling: API keys, JWTs and the admin key, resolved to a Principal.

Verifying a key costs no database round trip per request: each worker caches
what it read about a key for `AUTH_CACHE_SECONDS` (2 s), so revoking or
changing a key takes effect on every worker and every instance within that
time plus one lookup — well inside 5 s — with nothing to broadcast and nothing
that breaks when Redis is down. Values that cannot be a key or a JWT are
refused before any lookup, a well-formed key that does not exist is remembered
as unknown for minutes (see `UNKNOWN_SECONDS`), and an address that keeps
failing is throttled before its credentials are read (`FailureThrottle`).

No credential is never admin. Only the admin key, or an admin JWT minted with
the current admin key, is admin. Outside development auth is always on; in
development without ADMIN_API_KEY the LLM routes are open to an anonymous
*tenant* (warned about once at start) and the admin endpoints refuse.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from core.auth.credentials import (
    TokenClaims,
    TokenError,
    admin_fingerprint,
    constant_time_equals,
    hash_api_key,
    looks_like_api_key,
    looks_like_jwt,
    verify_token,
)
from core.config import Settings
from core.errors import AuthenticationError, ServiceUnavailableError
from core.limits.admission import Caller
from core.limits.rate_limit import FailureThrottle
from core.observability import metrics
from database.models import ApiKey
from database.repositories.keys import KeyRepository

log = structlog.get_logger("skygate.auth")

ANONYMOUS_TENANT = "anonymous"
ADMIN_SUBJECT = "admin"
# Tenant names the gateway uses for itself: the admin principal's, the open
# development principal's, and the issuer/owner name it stamps on tokens and
# models. A tenant owning one of them would share the admin's cache entries and
# usage rows (the cache key and the usage view go by tenant name). `system` owns
# the jobs the schedules submit (core.jobs.schedules).
SYSTEM_TENANT = "system"
RESERVED_TENANTS = frozenset({ADMIN_SUBJECT, ANONYMOUS_TENANT, "skygate", SYSTEM_TENANT})
CACHE_ENTRIES = 10_000
# A well-formed key whose hash is not in the database is remembered as unknown
# for this long — far past AUTH_CACHE_SECONDS, and safely so: a key only comes
# into existence when `POST /keys` generates its 256 random bits, so nobody can
# have presented it (and no worker can have remembered it as unknown) before it
# existed; revoking or disabling changes a row that exists, which is never
# remembered here. (Restoring a database a client had already tried a key
# against is the one case that waits out these minutes.)
UNKNOWN_SECONDS = 300.0
UNKNOWN_ENTRIES = 20_000  # ~4 MB at most; the oldest are forgotten first


def reserved_tenant(name: str) -> bool:
    """Whether `name` is, or reads as, a name the gateway uses for itself:
    case, spaces and punctuation aside (`Admin`, `admin `, `ad-min.`)."""
    return re.sub(r"[^0-9a-z]+", "", name.casefold()) in RESERVED_TENANTS


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
    expires_at: float | None = None  # when the credential ends (epoch s): tokens stop there too

    def may_use(self, model_group: str) -> bool:
        return self.allowed_models is None or model_group in self.allowed_models

    def caller(self, request_id: str) -> Caller:
        """Who one LLM call is for, as the pipeline (core.gateway.completions) sees it."""
        return Caller(
            tenant=self.tenant,
            request_id=request_id,
            api_key_id=self.key_id,
            limit_key=self.limit_key,
            allowed_models=self.allowed_models,
            tokens_per_minute=self.tpm,
            monthly_budget_usd=self.monthly_budget_usd,
        )

    def request_limits(self, settings: Settings) -> tuple[int, int]:
        """Requests per minute and per hour: the key's own, else the deployment's."""
        return (
            self.rpm or settings.rate_limit_per_minute,
            self.rph or settings.rate_limit_per_hour,
        )


def key_refusal(info: KeyInfo) -> tuple[str, str] | None:
    """Why a key cannot be used now, as (security event, message), or None. One
    rule for the edge and for the jobs that act with their submitter's key
    (core.jobs.chat_batch), so a key refused at one is refused at the other."""
    if info.state == "revoked":
        return "key_revoked", "This API key has been revoked."
    if info.state == "expired":  # marked by the maintenance.expire_keys job
        return "key_expired", "This API key has expired."
    if info.state != "active":
        return "key_disabled", "This API key is disabled."
    if info.expires_at is not None and info.expires_at <= datetime.now(UTC):
        return "key_expired", "This API key has expired."
    if reserved_tenant(info.tenant):  # a row from before names were reserved
        return (
            "key_tenant_reserved",
            "This API key belongs to a reserved tenant name; ask the admin for a new key.",
        )
    return None


def key_principal(info: KeyInfo, *, token_expires_at: float | None = None) -> Principal:
    """The principal of a key that `key_refusal` accepts (a token ends no later than its key)."""
    key_ends = info.expires_at.timestamp() if info.expires_at is not None else None
    ends = [t for t in (token_expires_at, key_ends) if t is not None]
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
        expires_at=min(ends) if ends else None,
    )


@dataclass(slots=True)
class _Window:
    started: float
    sent: int = 1
    held: int = 0


class LogSampler:
    """At most `burst` lines per kind each `interval` seconds. A flood of random keys
    must not become a flood of log lines; the lines held back are counted and
    reported by the first line of the next window (the metric stays exact)."""

    def __init__(self, *, burst: int = 10, interval: float = 10.0) -> None:
        self.burst = burst
        self.interval = interval
        self._windows: dict[str, _Window] = {}  # kinds are a fixed set of reasons

    def admit(self, kind: str) -> int | None:
        """The number of lines held back before this one, or None: hold this one."""
        now = time.monotonic()
        window = self._windows.get(kind)
        if window is None or now - window.started >= self.interval:
            self._windows[kind] = _Window(now)
            return window.held if window is not None else 0
        if window.sent < self.burst:
            window.sent += 1
            return 0
        window.held += 1
        return None


class Authenticator:
    def __init__(
        self,
        keys: KeyRepository,
        *,
        admin_key: str | None,
        jwt_secret: str | None,
        enabled: bool,
        cache_seconds: float = 2.0,
        throttle: FailureThrottle | None = None,
    ) -> None:
        self.keys = keys
        self.admin_key = admin_key
        self.jwt_secret = jwt_secret
        self.enabled = enabled
        self.cache_seconds = cache_seconds
        self.throttle = throttle
        self.fingerprint = (
            admin_fingerprint(secret=jwt_secret, admin_key=admin_key)
            if admin_key is not None and jwt_secret is not None
            else None
        )
        self._log = LogSampler()
        self._cache: OrderedDict[str, tuple[float, KeyInfo | None]] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()  # key hash -> forget at
        self._loading: dict[str, asyncio.Task[KeyInfo | None]] = {}
        self._generation = 0  # bumped by forget(): reads started before it are not kept

    def reject(self, event: str, message: str, **fields: object) -> AuthenticationError:
        """Count and log a refused credential (never the credential itself)."""
        metrics.SECURITY_EVENTS.labels(event).inc()
        held = self._log.admit(event)
        if held is not None:
            log.info("auth_rejected", reason=event, held_back=held, **fields)
        return AuthenticationError(message, headers={"WWW-Authenticate": "Bearer"})

    async def authenticate(self, credential: str | None, *, client_ip: str) -> Principal:
        if not self.enabled:  # development without ADMIN_API_KEY: open, never admin
            return Principal(
                tenant=ANONYMOUS_TENANT, key_id=None, admin=False, limit_key=f"ip:{client_ip}"
            )
        if not credential:
            raise self.reject(
                "auth_missing",
                "Missing credentials: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
            )
        if self.throttle is not None:
            await self.throttle.check(client_ip)
        try:
            return await self._verify(credential)
        except AuthenticationError:
            if self.throttle is not None:
                await self.throttle.failed(client_ip)
            raise

    def is_admin_credential(self, credential: str | None) -> bool:
        """The admin key or a current admin JWT, checked without any I/O (for
        `/metrics` and `/health`)."""
        if not credential:
            return False
        if self.admin_key is not None and constant_time_equals(credential, self.admin_key):
            return True
        if not (self.jwt_secret and looks_like_jwt(credential)):
            return False
        try:
            claims = verify_token(credential, secret=self.jwt_secret)
        except TokenError:
            return False
        return self._current_admin_token(claims)

    async def _verify(self, credential: str) -> Principal:
        if self.admin_key is not None and constant_time_equals(credential, self.admin_key):
            return Principal(tenant=ADMIN_SUBJECT, key_id=None, admin=True, limit_key="admin")
        if looks_like_api_key(credential):
            key_hash = hash_api_key(credential)
            if self._known_unknown(key_hash):
                raise self.reject("key_unknown", "Invalid API key.", key_prefix=credential[:12])
            info = await self._lookup("hash:" + key_hash)
            if info is None:
                self._remember_unknown(key_hash)
                raise self.reject("key_unknown", "Invalid API key.", key_prefix=credential[:12])
            return self._principal(info)
        if looks_like_jwt(credential) and self.jwt_secret:
            try:
                claims = verify_token(credential, secret=self.jwt_secret)
            except TokenError as exc:
                raise self.reject("jwt_invalid", str(exc)) from None
            if claims.admin or claims.subject == ADMIN_SUBJECT:
                if not self._current_admin_token(claims):
                    raise self.reject(
                        "jwt_admin_stale",
                        "This admin token was not issued with the current admin key.",
                    )
                return Principal(
                    tenant=ADMIN_SUBJECT,
                    key_id=None,
                    admin=True,
                    limit_key="admin",
                    expires_at=claims.expires_at,
                )
            info = await self._lookup("id:" + claims.subject)
            if info is None or info.tenant != claims.tenant:
                raise self.reject("jwt_invalid", "The token's key no longer exists.")
            return self._principal(info, token_expires_at=claims.expires_at)
        raise self.reject("auth_invalid", "Invalid API key.")

    async def recheck(self, principal: Principal) -> Principal:
        """A long-lived session's principal as its key is now (read at most
        AUTH_CACHE_SECONDS ago): AuthenticationError once the key is revoked, disabled,
        expired or gone, or the session's token has expired."""
        if principal.expires_at is not None and principal.expires_at <= time.time():
            raise self.reject("jwt_invalid", "The session's token has expired.")
        if principal.key_id is None:  # the admin, or the open development edge
            return principal
        info = await self._lookup("id:" + principal.key_id)
        if info is None or info.tenant != principal.tenant:
            raise self.reject("key_unknown", "The session's API key no longer exists.")
        return self._principal(info, token_expires_at=principal.expires_at)

    def _current_admin_token(self, claims: TokenClaims) -> bool:
        """An admin token counts only with the fingerprint of the admin key in force:
        rotating ADMIN_API_KEY (or removing it) retires every admin token."""
        return (
            claims.admin
            and claims.subject == ADMIN_SUBJECT
            and self.fingerprint is not None
            and claims.admin_fingerprint is not None
            and constant_time_equals(claims.admin_fingerprint, self.fingerprint)
        )

    def _known_unknown(self, key_hash: str) -> bool:
        forget_at = self._unknown.get(key_hash)
        if forget_at is None:
            return False
        if forget_at > time.monotonic():
            return True
        del self._unknown[key_hash]
        return False

    def _remember_unknown(self, key_hash: str) -> None:
        self._unknown[key_hash] = time.monotonic() + UNKNOWN_SECONDS
        self._unknown.move_to_end(key_hash)
        while len(self._unknown) > UNKNOWN_ENTRIES:
            self._unknown.popitem(last=False)

    def _principal(self, info: KeyInfo, *, token_expires_at: float | None = None) -> Principal:
        refused = key_refusal(info)
        if refused is not None:
            event, message = refused
            raise self.reject(event, message, key_id=info.id)
        return key_principal(info, token_expires_at=token_expires_at)

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
            row = await (self.keys.by_hash(value) if kind == "hash" else self.keys.by_id(value))
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
