"""What an API key may hold, validated, and how a key is shown: one definition for
the admin API (api/v1/keys.py) and the CLI (skygate/keys.py), so a key made by
either is the same key, refused for the same reasons.

Tenant names the gateway uses for itself (`admin`, `anonymous`, ... — see
`core.auth.authenticator.RESERVED_TENANTS`), in any case or with punctuation around them, are
refused: such a tenant would share the admin's cache entries and usage rows. A key's
tenant cannot be changed after creation (`KeyUpdate` has no `tenant`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.auth.authenticator import reserved_tenant
from core.auth.keys import KeyRow

MAX_INT32 = 2**31 - 1  # the columns are INTEGER
NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._:@/-]{0,127}$"


class KeyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_models: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = None
    rpm_limit: int | None = Field(default=None, ge=1, le=MAX_INT32)
    rph_limit: int | None = Field(default=None, ge=1, le=MAX_INT32)
    tpm_limit: int | None = Field(default=None, ge=1, le=MAX_INT32)
    monthly_budget_usd: float | None = Field(default=None, ge=0, le=1e9)
    expires_at: datetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class KeyCreate(KeyLimits):
    name: str = Field(pattern=NAME)
    tenant: str = Field(pattern=NAME)

    @field_validator("tenant")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if reserved_tenant(value):
            raise ValueError(f"the tenant name {value!r} is reserved by the gateway")
        return value


class KeyUpdate(KeyLimits):
    name: str | None = Field(default=None, pattern=NAME)
    state: Literal["active", "disabled", "revoked"] | None = None

    @field_validator("name", "state")
    @classmethod
    def _not_null(cls, value: str | None) -> str | None:
        # Left out means "unchanged"; null would reach a NOT NULL column (a 500, found
        # by the fuzz pass). A limit's null, by contrast, means "no limit".
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


def key_view(row: KeyRow) -> dict[str, Any]:
    """A key as the admin API and the CLI show it: never its secret or hash."""
    return {
        "id": row.id,
        "object": "api_key",
        "name": row.name,
        "tenant": row.tenant,
        "prefix": row.key_prefix,
        "state": row.state,
        "allowed_models": row.allowed_models,
        "rpm_limit": row.rpm_limit,
        "rph_limit": row.rph_limit,
        "tpm_limit": row.tpm_limit,
        "monthly_budget_usd": (
            float(row.monthly_budget_usd) if row.monthly_budget_usd is not None else None
        ),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }
