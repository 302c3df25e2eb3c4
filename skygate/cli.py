"""The `skygate` command: its parser and `main`, the console script's entry point.

Exit status: 0 done; 1 the command failed (invalid configuration, a database error,
an unknown key), with one message on stderr and never a traceback; 2 it was asked
wrongly (an unknown command or option, a value out of range), as argparse does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from core.config import VERSION
from skygate import check_config, keys, migrate
from skygate.common import CommandError

EPILOG = """\
Settings come from the environment and ./.env, exactly as the servers read them
(DATABASE_URL, ENVIRONMENT, ROUTER_CONFIG, AGENTS_CONFIG, ...).

examples:
  python -m skygate migrate
  python -m skygate keys create --tenant acme --name backend --rpm-limit 600
  python -m skygate keys list --json
  python -m skygate check-config
"""


def _prog() -> str:
    """How the user called it, for the usage lines (`python -m skygate` or `skygate`)."""
    return "python -m skygate" if Path(sys.argv[0]).name == "__main__.py" else "skygate"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog=_prog(),
        description="Operate Skygate: API keys in the database, configuration checks for "
        "CI, and database migrations.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--version", action="version", version=f"skygate {VERSION}")
    commands = root.add_subparsers(dest="command", metavar="COMMAND", required=True)
    keys.register(commands)
    check_config.register(commands)
    migrate.register(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on a usage error, 0 after --help
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
