"""Every command and option of `skygate` explains itself: `--help` works for each
command (exit 0), every option has a help line, mistakes are usage errors (exit 2),
and the console script the project declares is the CLI's `main`."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from skygate.cli import parser
from tests.support.cli import ROOT, run


def commands(node: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser, the root included: (), ("keys",), ("keys", "create")..."""
    found = [path]
    for action in node._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += commands(child, (*path, name))
    return found


def parsers(node: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [node]
    for action in node._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += parsers(child)
    return found


ALL = commands(parser())


def test_every_command_is_covered() -> None:
    assert {" ".join(p) for p in ALL} >= {
        "", "keys", "keys create", "keys list", "keys revoke", "keys rotate",
        "check-config", "migrate",
    }  # fmt: skip


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "skygate")
def test_help_of_every_command_exits_0(path: tuple[str, ...], tmp_path: Path) -> None:
    shown = run(*path, "--help", cwd=tmp_path)
    assert shown.code == 0, shown.output
    assert shown.stdout.startswith(f"usage: python -m skygate {' '.join(path)}".rstrip())
    assert shown.stderr == ""


def test_every_command_and_option_has_help_text() -> None:
    for node in parsers(parser()):
        assert node.description, node.prog
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), node.prog
            else:
                assert action.help, f"{node.prog} {action.option_strings or action.dest}"


@pytest.mark.parametrize(
    "args", [(), ("keys",), ("frobnicate",), ("keys", "create", "--name", "x"), ("keys", "revoke")]
)
def test_usage_errors_exit_2(args: tuple[str, ...], tmp_path: Path) -> None:
    wrong = run(*args, cwd=tmp_path)
    assert wrong.code == 2, wrong.output
    assert "usage:" in wrong.stderr and "Traceback" not in wrong.stderr


def test_the_console_script_is_the_clis_main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    module, _, name = project["project"]["scripts"]["skygate"].partition(":")
    assert (
        getattr(importlib.import_module(module), name)
        is importlib.import_module("skygate.cli").main
    )


def test_the_installed_skygate_command_runs(tmp_path: Path) -> None:
    """`make run` / `make test` install the project into the virtualenv (editable), so
    the `skygate` command sits beside the interpreter running the tests."""
    command = Path(sys.executable).parent / "skygate"
    assert command.exists(), "the Makefile installs the project: pip install --no-deps -e ."
    done = subprocess.run(
        [str(command), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "keys" in done.stdout and "check-config" in done.stdout
