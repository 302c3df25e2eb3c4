"""Managing API keys: what the admin endpoints do, without HTTP.

A new key's secret is generated here and returned once; only its hash and display
prefix are stored (`core.auth.credentials`). Any change to a key drops this
worker's cached view of keys and of the key's spend at once; the other workers
and instances see it within `AUTH_CACHE_SECONDS` (core.auth.authenticator).

Rotating gives a key a new secret in place, with no grace period: the old secret is
refused from the next lookup on (within `AUTH_CACHE_SECONDS`), since a rotation is
usually for a secret that leaked. The key keeps its id, tenant, limits, spend and
usage history (a new key would start its monthly budget afresh). Tokens already
exchanged for the key (`POST /auth/token`) name the key, not the secret: they run
to their expiry (`JWT_TTL_SECONDS`); revoking the key ends them at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from core.auth.authenticator import Authenticator
from core.auth.credentials import display_prefix, hash_api_key, new_api_key
from core.errors import ConflictError, NotFoundError
from core.limits.budget import SpendTracker
from database.models import ApiKey
from database.repositories.keys import KeyRepository

KeyRow = ApiKey  # what the admin endpoints render (they never touch the ORM themselves)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    row: ApiKey
    secret: str  # shown to the caller once, never stored


class KeyService:
    def __init__(self, keys: KeyRepository, *, auth: Authenticator, spend: SpendTracker) -> None:
        self.keys = keys
        self.auth = auth
        self.spend = spend

    async def create(self, *, name: str, tenant: str, **limits: Any) -> CreatedKey:
        secret = new_api_key()
        row = await self.keys.create(
            id=str(uuid.uuid4()),
            name=name,
            tenant=tenant,
            key_prefix=display_prefix(secret),
            key_hash=hash_api_key(secret),
            state="active",
            **limits,
        )
        return CreatedKey(row=row, secret=secret)

    async def list(self, *, tenant: str | None = None) -> list[ApiKey]:
        return await self.keys.list(tenant=tenant)

    async def get(self, key_id: str) -> ApiKey:
        row = await self.keys.by_id(key_id)
        if row is None:
            raise NotFoundError(f"No API key with id '{key_id}'.", param="id", code="key_not_found")
        return row

    async def update(self, key_id: str, **values: Any) -> ApiKey:
        await self.get(key_id)
        if values:
            await self.keys.update(key_id, **values)
            self._changed(key_id)
        return await self.get(key_id)

    async def revoke(self, key_id: str) -> ApiKey:
        await self.get(key_id)
        await self.keys.update(key_id, state="revoked")
        self._changed(key_id)
        return await self.get(key_id)

    async def rotate(self, key_id: str) -> CreatedKey:
        """A new secret for the key (shown once); the old one stops working."""
        row = await self.get(key_id)
        if row.state == "revoked":
            raise ConflictError(
                f"API key '{key_id}' is revoked; create a new key instead.",
                param="id",
                code="key_revoked",
            )
        secret = new_api_key()
        await self.keys.update(
            key_id, key_prefix=display_prefix(secret), key_hash=hash_api_key(secret)
        )
        self._changed(key_id)
        return CreatedKey(row=await self.get(key_id), secret=secret)

    def _changed(self, key_id: str) -> None:
        self.auth.forget()  # this worker at once; the others within AUTH_CACHE_SECONDS
        self.spend.forget(key_id)
