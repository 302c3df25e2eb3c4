"""`skygate check-config`: is this environment one Skygate would start with?

It runs the checks start-up runs, by the same functions, so it refuses with
start-up's messages (`file:line: field: message` for the YAML files): the settings
(`core.config.load_settings`, the production refusals included), the router
(`core.llm.factory.build_router`: ROUTER_CONFIG or the provider keys, each
deployment's key), the agents (`agents.runtime.agents_file`: AGENTS_CONFIG against
the router's models) and JOB_TYPES_MODULE. Offline: no provider is called, and the
database is reached only with `--database` (then it checks what `/ready` checks).
Exit 0 when valid, 1 when not: a CI step.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from core.config import OPEN_ACCESS_WARNING, ConfigurationError, Settings
from skygate import common
from skygate.common import CommandError, shown_url

if TYPE_CHECKING:
    from agents.definitions import AgentsFile
    from core.llm.router import Router

Commands = argparse._SubParsersAction  # argparse names no public type for it


def register(commands: Commands[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check-config",
        help="validate the environment, ROUTER_CONFIG and AGENTS_CONFIG offline (for CI)",
        description="Validate the settings in the environment (and ./.env), ROUTER_CONFIG "
        "and AGENTS_CONFIG with the checks and messages of start-up, without calling a "
        "provider or, unless --database is given, the database. Exit status 0: Skygate "
        "would start with this configuration; 1: it would refuse, for the reasons printed.",
    )
    parser.add_argument(
        "--database",
        action="store_true",
        help="also connect to DATABASE_URL and check that its migrations are at head "
        "(what /ready checks)",
    )
    parser.set_defaults(run=check)


def check(args: argparse.Namespace) -> int:
    settings = common.settings()
    # Imported here: `--help` and the other commands do not pay for the router and
    # the agents (litellm is imported only when a deployment needs it, as at start-up).
    from agents.runtime import agents_file
    from core.jobs.registry import job_catalog
    from core.llm.factory import build_router

    try:
        router, demo = build_router(settings)
        try:
            agents = agents_file(settings, router=router, demo=demo)
        finally:
            asyncio.run(router.close())
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
    try:
        job_catalog(settings)  # imports the module and calls its register(), as start-up
    except (ImportError, AttributeError) as exc:
        raise CommandError(
            f"Skygate configuration is invalid:\n  JOB_TYPES_MODULE: "
            f"cannot load {settings.job_types_module!r}: {exc}"
        ) from None
    if args.database:
        _check_database(settings)
    print(f"Configuration OK (ENVIRONMENT={settings.environment}).")
    for line in _summary(settings, router, demo, agents, args.database):
        print(f"  {line}")
    if not settings.auth_enabled:
        print(f"Warning: {OPEN_ACCESS_WARNING}")
    return common.OK


def _check_database(settings: Settings) -> None:
    from skygate.database import not_at_head, state

    problem = not_at_head(*asyncio.run(state(settings)))
    if problem is not None:
        raise CommandError(f"{problem}: run `python -m skygate migrate`")


def _summary(
    settings: Settings, router: Router, demo: bool, agents: AgentsFile, connected: bool
) -> list[str]:
    groups = router.public_names()
    deployments = router.all_deployments()
    if demo:
        models = "the offline demo model only (no provider configured; development only)"
    else:
        source = (
            f"ROUTER_CONFIG {settings.router_config}"
            if settings.router_config
            else "provider keys " + ", ".join(settings.provider_credentials())
        )
        models = (
            f"{_count(len(groups), 'model')} ({', '.join(groups)}), "
            f"{_count(len(deployments), 'deployment')}, from {source}"
        )
    if settings.agents_config:
        agent_source = f"from AGENTS_CONFIG {settings.agents_config}"
    else:
        agent_source = "the bundled examples" if agents.agents else "AGENTS_CONFIG unset"
    database = shown_url(settings.database_url)
    return [
        f"database: {database} "
        + ("(reachable, migrations at head)" if connected else "(not connected; --database)"),
        f"redis: {shown_url(settings.redis_url) if settings.redis_url else 'none (in-process)'}",
        f"models: {models}",
        f"agents: {len(agents.agents)}, {agent_source}",
        "auth: " + ("on" if settings.auth_enabled else "OFF (no ADMIN_API_KEY)"),
    ]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")
