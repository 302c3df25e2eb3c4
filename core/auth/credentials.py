"""API-key secrets and JWTs. Pure functions: no I/O, no settings lookups.

Keys look like `sk-sg-<43 url-safe characters>` (256 random bits). Only their
SHA-256 is stored: with that much entropy a fast hash is safe, and a lookup by
hash needs no per-request key stretching. A presented value that does not have
the key's exact shape is refused before any lookup, so hostile input (SQL,
NUL bytes, 8 KB strings, non-ASCII) never reaches the database.

JWTs are HS256 only, with required `exp`, `iat`, `iss`, `aud` and `sub`, a small
leeway, and a size cap; anything else (`alg: none`, RS256/HS256 confusion,
tampering, wrong audience or issuer, future `nbf`) is rejected. An admin JWT
also carries `akf`, a fingerprint of the admin key that minted it (an HMAC of
the key under the JWT secret, truncated): rotating ADMIN_API_KEY retires every
admin JWT at once, and the claim reveals nothing about the key — not even its
plain hash, which would let anyone holding a token test guesses offline.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

KEY_PREFIX = "sk-sg-"
KEY_PATTERN = re.compile(r"sk-sg-[A-Za-z0-9_-]{43}")
DISPLAY_PREFIX_LENGTH = 12
JWT_ALGORITHM = "HS256"
JWT_ISSUER = "skygate"
JWT_AUDIENCE = "skygate-api"
JWT_LEEWAY_SECONDS = 10
JWT_MAX_BYTES = 4096
JWT_PATTERN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
ADMIN_FINGERPRINT_CLAIM = "akf"
ADMIN_FINGERPRINT_HEX = 32  # 128 bits: collisions are out of reach, and the claim stays short


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_PREFIX_LENGTH]


def looks_like_api_key(value: str) -> bool:
    return len(value) == len(KEY_PREFIX) + 43 and KEY_PATTERN.fullmatch(value) is not None


def looks_like_jwt(value: str) -> bool:
    return len(value) <= JWT_MAX_BYTES and JWT_PATTERN.fullmatch(value) is not None


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def admin_fingerprint(*, secret: str, admin_key: str) -> str:
    """The admin key's fingerprint for admin JWTs: keyed by the JWT secret, so it
    cannot be computed, or a guess at the key checked, without that secret."""
    digest = hmac.new(secret.encode(), b"skygate-admin-key:" + admin_key.encode(), "sha256")
    return digest.hexdigest()[:ADMIN_FINGERPRINT_HEX]


class TokenError(Exception):
    """A JWT failed verification; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    tenant: str
    admin: bool
    expires_at: int
    token_id: str
    admin_fingerprint: str | None = None


def issue_token(
    *,
    secret: str,
    subject: str,
    tenant: str,
    admin: bool,
    ttl_seconds: int,
    not_after: float | None = None,
    fingerprint: str | None = None,
) -> tuple[str, int]:
    """A signed token and its expiry: `ttl_seconds` from now, but never later than
    `not_after` (the expiry of the credential it was exchanged for)."""
    now = int(time.time())
    expires = now + ttl_seconds
    if not_after is not None:
        expires = min(expires, int(not_after))
    payload: dict[str, Any] = {
        "iss": JWT_ISSUER,
        "aud": JWT_AUDIENCE,
        "sub": subject,
        "tenant": tenant,
        "admin": admin,
        "iat": now,
        "nbf": now,
        "exp": expires,
        "jti": uuid.uuid4().hex,
    }
    if fingerprint is not None:
        payload[ADMIN_FINGERPRINT_CLAIM] = fingerprint
    return jwt.encode(payload, secret, algorithm=JWT_ALGORITHM), expires


def verify_token(token: str, *, secret: str) -> TokenClaims:
    if not looks_like_jwt(token):
        raise TokenError("Malformed or oversized token.")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            audience=JWT_AUDIENCE,
            issuer=JWT_ISSUER,
            leeway=JWT_LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("The token has expired.") from None
    except jwt.PyJWTError:
        raise TokenError("The token is invalid.") from None
    subject, tenant = claims.get("sub"), claims.get("tenant")
    fingerprint = claims.get(ADMIN_FINGERPRINT_CLAIM)
    if (
        not isinstance(subject, str)
        or not isinstance(tenant, str)
        or not isinstance(fingerprint, str | None)
    ):
        raise TokenError("The token is invalid.")
    return TokenClaims(
        subject=subject,
        tenant=tenant,
        admin=claims.get("admin") is True,
        expires_at=int(claims["exp"]),
        token_id=str(claims.get("jti", "")),
        admin_fingerprint=fingerprint,
    )
