"""A pydantic model from a YAML file, with every mistake reported as
`file:line: dotted.field: message`.

Operators edit these files by hand; a message that names the line and the field is
the difference between a fix and a search. The loader reads the file, parses it
keeping the node tree (so a pydantic error location can be walked back to its line),
reports keys PyYAML would silently drop as duplicates, and returns the validated
model or raises `YamlModelError` with one line per problem, sorted by line.

Models loaded here should derive from `StrictModel` (an unknown key is a typo to
report, not to ignore) and report their own cross-field errors with `field_error` and
`raise_field_errors`, so those point at a line too. This module knows nothing about
what the files configure (router, agents, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError, PydanticKnownError

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class YamlModelError(ValueError):
    """The file is unusable. `problems` holds one line per mistake, each
    `path:line: dotted.field: message` when it could be placed."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class StrictModel(BaseModel):
    """A hand-edited file's model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# -- helpers for models' own validators --------------------------------------------
def field_error(
    loc: Loc, kind: str, template: str, value: object, /, **ctx: str
) -> InitErrorDetails:
    """One validation error at `loc`, of pydantic error type `kind`. User values go in
    `ctx` (any names, `kind` too), never in `template`."""
    return InitErrorDetails(type=PydanticCustomError(kind, template, ctx), loc=loc, input=value)


def raise_field_errors(title: str, errors: list[InitErrorDetails]) -> NoReturn:
    """Raise `errors` from a validator. A ValidationError raised there keeps its
    locations (relative to the model being validated), so the loader can point at
    the offending line."""
    raise ValidationError.from_exception_data(title, errors)


def require_items(items: tuple[Any, ...]) -> None:
    """For an after-validator: the list must not be empty. `Field(min_length=1)` on a
    tuple would also report "too short" whenever an item fails, which misleads."""
    if not items:
        raise PydanticKnownError(
            "too_short", {"field_type": "List", "min_length": 1, "actual_length": 0}
        )


def none_as(value: object, empty: object) -> object:
    """For a before-validator: `key:` with every entry commented out parses as null;
    treat it as `empty`."""
    return empty if value is None else value


# -- loading -------------------------------------------------------------------------
def load_yaml_model(
    path: str | Path,
    model: type[M],
    *,
    what: str,
    expected: str,
    context: Mapping[str, Any] | None = None,
) -> M:
    """Read, parse and validate `path` as `model`, or raise `YamlModelError` listing
    every problem. `what` names the file in messages ("router config"); `expected`
    describes its top level ("a mapping with model_groups"). The path is shown as given.
    `context` reaches the model's validators (what the file refers to, e.g. the model
    groups an agent may name), so those mistakes point at their line too."""
    shown = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlModelError([f"{shown}: {what} file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise YamlModelError([f"{shown}: cannot read {what}: {reason}"]) from None

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        problems = _duplicate_keys(shown, root) if root is not None else []
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        raise YamlModelError([_yaml_problem(shown, exc)]) from None
    except yaml.YAMLError as exc:
        raise YamlModelError([f"{shown}: invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()

    if root is None:
        raise YamlModelError([f"{shown}: file is empty; expected {expected}"])
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        found = type(data).__name__
        line = root.start_mark.line + 1
        raise YamlModelError([f"{shown}:{line}: top level must be {expected}, not a {found}"])

    try:
        result = model.model_validate(data, context=context)
    except ValidationError as exc:
        problems += [_validation_problem(shown, root, error) for error in exc.errors()]
        raise YamlModelError(sorted(problems, key=_problem_line)) from None
    if problems:
        raise YamlModelError(sorted(problems, key=_problem_line))
    return result


def _yaml_problem(shown: str, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{shown}:{mark.line + 1}" if mark is not None else shown
    detail = exc.problem or "syntax error"
    if exc.context:
        context_line = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
        detail += f" ({exc.context}{context_line})"
    return f"{where}: invalid YAML: {detail}"


def _validation_problem(shown: str, root: yaml.Node, error: Mapping[str, Any]) -> str:
    loc: Loc = tuple(error.get("loc", ()))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if error.get("type") == "tuple_type":
        message = "Input should be a list"  # a YAML reader writes lists, not tuples
    elif error.get("type") == "extra_forbidden":
        message = "unknown field (check the spelling)"
    field = ".".join(str(step) for step in loc)
    line = _line_of(root, loc)
    return f"{shown}:{line}: {field}: {message}" if field else f"{shown}:{line}: {message}"


def _problem_line(problem: str) -> int:
    match = re.match(r"^.*?:(\d+): ", problem)
    return int(match.group(1)) if match else 0


def _mapping_entry(node: yaml.MappingNode, step: str | int) -> tuple[yaml.Node, yaml.Node] | None:
    """The (key, value) nodes for `step`; the last one wins, as in the parsed data."""
    found = None
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == str(step):
            found = (key, value)
    return found


def _line_of(root: yaml.Node, loc: Loc) -> int:
    """The 1-based line an error at `loc` refers to: walk the node tree along the
    location as far as it goes. A value in a mapping reports its key's line (so a
    block list or mapping is reported where it is named); a missing field reports
    the line where its parent mapping starts."""
    node, at = root, root
    for step in loc:
        if step == "[key]":
            break  # a bad mapping key: `at` is already that key
        if isinstance(node, yaml.MappingNode):
            entry = _mapping_entry(node, step)
            if entry is None:
                at = node
                break
            at, node = entry
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if not 0 <= step < len(node.value):
                break
            node = at = node.value[step]
        else:
            break
    return at.start_mark.line + 1


def _duplicate_keys(shown: str, root: yaml.Node) -> list[str]:
    """PyYAML silently keeps the last of two equal keys; in a config that hides a
    typo or a pasted block, so each repeat is a problem."""
    problems: list[str] = []
    seen_nodes: set[int] = set()

    def walk(node: yaml.Node, path: Loc) -> None:
        if id(node) in seen_nodes:  # anchors and aliases share nodes
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                field = ".".join(str(p) for p in (*path, key.value))
                if key.value in keys:
                    problems.append(
                        f"{shown}:{line}: {field}: duplicate key (first at line {keys[key.value]})"
                    )
                else:
                    keys[key.value] = line
                walk(value, (*path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    walk(root, ())
    return problems
