"""What every command shares: the exit codes, the one failure type a command
raises, the settings (loaded and refused exactly as the servers do), and URLs shown
without their passwords.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from core.config import ConfigurationError, Settings, load_settings
from core.observability.logging import configure_logging

OK = 0
FAILURE = 1  # the command ran and failed: invalid configuration, database error, unknown key
USAGE = 2  # the command was asked wrongly (argparse's own code for bad options)


class CommandError(Exception):
    """A command's failure: one message for stderr and an exit code, never a traceback."""

    def __init__(self, message: str, *, code: int = FAILURE) -> None:
        super().__init__(message)
        self.code = code


def settings() -> Settings:
    """The servers' settings from the environment (and `./.env`), refused with the
    message start-up gives; logs go to stderr, secrets redacted, as the servers log."""
    try:
        loaded = load_settings()
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
    configure_logging(
        json_logs=loaded.json_logs, level=loaded.log_level, secrets=loaded.secret_values()
    )
    return loaded


def shown_url(url: str) -> str:
    """`url` with its password replaced by `***`, for messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")
