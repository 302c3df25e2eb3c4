"""`skygate keys create | list | revoke | rotate`: API keys in the database.

Keys are made by the admin API's own service (`core.auth.keys.KeyService`) and
validated by the admin API's own models (`core.auth.key_schema`), so a key made here
is the key `POST /api/v1/keys` would make: same secret shape, same hash, same fields,
the same refusals (a reserved tenant, a limit out of range). A secret is printed once,
by `create` and `rotate`; `list` shows the display prefix only. `--json` prints what
the admin API answers, for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from core.auth.key_schema import KeyCreate, key_view
from core.auth.keys import CreatedKey, KeyRow, KeyService
from core.config import Settings
from core.errors import GatewayError
from skygate import common
from skygate.common import USAGE, CommandError
from skygate.database import key_service

Commands = argparse._SubParsersAction  # argparse names no public type for it
# No grace period (core.auth.keys): a rotation is usually for a secret that leaked.
ROTATION = (
    "The old secret stops working within AUTH_CACHE_SECONDS{seconds} on running gateways; "
    "tokens already exchanged for it run to their expiry (JWT_TTL_SECONDS)."
)


def register(commands: Commands[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="create, list, revoke and rotate API keys in the database",
        description="Manage API keys directly in the database at DATABASE_URL (no admin key "
        "or running server needed: this is how the first key of a new deployment is made). "
        "Keys are the ones the admin API makes; running gateways see changes within "
        "AUTH_CACHE_SECONDS.",
    )
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "--json", action="store_true", help="print the admin API's JSON answer (for scripts)"
    )

    create = actions.add_parser(
        "create",
        parents=[output],
        help="create a key and print its secret (once)",
        description="Create an API key for a tenant. The secret is printed once and only its "
        "hash is stored: keep it now. Limits left out fall back to the gateway's defaults "
        "(RATE_LIMIT_PER_MINUTE, ...); no budget means none.",
    )
    create.add_argument("--tenant", required=True, help="the tenant the key acts for")
    create.add_argument("--name", required=True, help="a label for people (e.g. 'ci', 'web')")
    create.add_argument(
        "--allowed-models",
        action="append",
        metavar="MODEL[,MODEL...]",
        help="the model groups or aliases the key may call (repeat or separate with commas; "
        "default: every model)",
    )
    create.add_argument("--rpm-limit", type=int, metavar="N", help="requests per minute")
    create.add_argument("--rph-limit", type=int, metavar="N", help="requests per hour")
    create.add_argument("--tpm-limit", type=int, metavar="N", help="tokens per minute")
    create.add_argument(
        "--monthly-budget-usd", type=float, metavar="USD", help="spend allowed per month, in USD"
    )
    create.add_argument(
        "--expires-at",
        metavar="WHEN",
        help="when the key stops working: an ISO 8601 date or time "
        "(2026-12-31, 2026-12-31T18:00:00+02:00; without a zone: UTC)",
    )
    create.set_defaults(run=_command(_create))

    listing = actions.add_parser(
        "list",
        parents=[output],
        help="list keys (never their secrets)",
        description="List API keys, oldest first, with their display prefix and state; "
        "revoked and expired keys included.",
    )
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.set_defaults(run=_command(_list))

    revoke = actions.add_parser(
        "revoke",
        parents=[output],
        help="revoke a key (it stops working)",
        description="Revoke an API key: running gateways refuse it (401) within "
        "AUTH_CACHE_SECONDS, and tokens exchanged for it stop working with it. Revoking "
        "cannot be undone; the key stays listed as revoked.",
    )
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (see `keys list`)")
    revoke.set_defaults(run=_command(_revoke))

    rotate = actions.add_parser(
        "rotate",
        parents=[output],
        help="give a key a new secret (printed once); the old one stops working",
        description="Give an API key a new secret, printed once. The key keeps its id, "
        "tenant, limits, budget and usage. No grace period: "
        + ROTATION.format(seconds="")
        + " A revoked key cannot be rotated.",
    )
    rotate.add_argument("key_id", metavar="KEY_ID", help="the key's id (see `keys list`)")
    rotate.set_defaults(run=_command(_rotate))


Action = Callable[[KeyService, Settings, argparse.Namespace], Awaitable[None]]


def _command(action: Action) -> Callable[[argparse.Namespace], int]:
    """An action run against the database, its refusals (an unknown key) as failures."""

    def run(args: argparse.Namespace) -> int:
        settings = common.settings()

        async def go() -> None:
            async with key_service(settings) as service:
                await action(service, settings, args)

        try:
            asyncio.run(go())
        except GatewayError as exc:  # the service's own refusals: not found, conflict
            raise CommandError(exc.message) from None
        return common.OK

    return run


async def _create(service: KeyService, settings: Settings, args: argparse.Namespace) -> None:
    created = await service.create(**_key_fields(args).model_dump())
    _print_secret(created, args, verb="Created", note=None)


async def _list(service: KeyService, settings: Settings, args: argparse.Namespace) -> None:
    rows = await service.list(tenant=args.tenant)
    if args.json:
        common.print_json({"object": "list", "data": [key_view(row) for row in rows]})
    elif not rows:
        print("No API keys" + (f" for tenant {args.tenant!r}." if args.tenant else "."))
    else:
        print(_table(rows))


async def _revoke(service: KeyService, settings: Settings, args: argparse.Namespace) -> None:
    row = await service.revoke(args.key_id)
    if args.json:
        common.print_json({**key_view(row), "deleted": True})
        return
    print(
        f"Revoked API key {row.id} ({row.name!r}, tenant {row.tenant!r}, {row.key_prefix}...).\n"
        f"Running gateways refuse it within AUTH_CACHE_SECONDS "
        f"({settings.auth_cache_seconds:g} s)."
    )


async def _rotate(service: KeyService, settings: Settings, args: argparse.Namespace) -> None:
    created = await service.rotate(args.key_id)
    _print_secret(
        created,
        args,
        verb="Rotated",
        note=ROTATION.format(seconds=f" ({settings.auth_cache_seconds:g} s)"),
    )


def _key_fields(args: argparse.Namespace) -> KeyCreate:
    """The options as the admin API's body, validated by the API's own model; a
    refusal names the option."""
    models = (
        [m.strip() for given in args.allowed_models for m in given.split(",") if m.strip()]
        if args.allowed_models
        else None
    )
    fields: dict[str, Any] = {
        "tenant": args.tenant,
        "name": args.name,
        "allowed_models": models,
        "rpm_limit": args.rpm_limit,
        "rph_limit": args.rph_limit,
        "tpm_limit": args.tpm_limit,
        "monthly_budget_usd": args.monthly_budget_usd,
        "expires_at": args.expires_at,
    }
    try:
        return KeyCreate.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            option = "--" + str(error["loc"][0]).replace("_", "-") if error["loc"] else ""
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"  {option}: {message}" if option else f"  {message}")
        raise CommandError("invalid key options:\n" + "\n".join(lines), code=USAGE) from None


def _print_secret(
    created: CreatedKey, args: argparse.Namespace, *, verb: str, note: str | None
) -> None:
    row = created.row
    if args.json:
        common.print_json({**key_view(row), "key": created.secret})
        return
    print(f"{verb} API key {row.id} ({row.name!r}, tenant {row.tenant!r}).")
    limits = _limits(row)
    if limits:
        print(f"Limits: {limits}.")
    if note:
        print(note)
    print("Its secret, shown this once (only its hash is stored):")
    print(created.secret)


def _limits(row: KeyRow) -> str:
    view = key_view(row)
    parts = []
    if view["allowed_models"]:
        parts.append("models " + ", ".join(view["allowed_models"]))
    for field, label in (("rpm_limit", "rpm"), ("rph_limit", "rph"), ("tpm_limit", "tpm")):
        if view[field] is not None:
            parts.append(f"{label} {view[field]}")
    if view["monthly_budget_usd"] is not None:
        parts.append(f"budget ${view['monthly_budget_usd']:g}/month")
    if view["expires_at"]:
        parts.append(f"expires {view['expires_at']}")
    return "; ".join(parts)


def _table(rows: list[KeyRow]) -> str:
    header = ("ID", "TENANT", "NAME", "PREFIX", "STATE", "LIMITS", "CREATED")
    lines = [header] + [
        (
            row.id,
            row.tenant,
            row.name,
            row.key_prefix,
            row.state,
            _limits(row) or "-",
            key_view(row)["created_at"] or "-",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
