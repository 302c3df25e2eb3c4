"""The metric names a PromQL expression reads, and Grafana's variables filled in so
Prometheus can evaluate a panel's query as Grafana would send it.

Names are found by taking out of the expression everything that is not one:
string literals, label matchers `{...}`, ranges `[...]`, grouping clauses
(`by (...)`, `on (...)`, ...); what is left that looks like an identifier, is not
followed by `(` (a function call) and is not a keyword or an aggregation operator
is a metric name."""

from __future__ import annotations

import re

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_NOT_METRICS = frozenset(
    {
        # binary and set operators, modifiers
        "and", "or", "unless", "bool", "offset", "atan2",
        "by", "without", "on", "ignoring", "group_left", "group_right",
        # aggregation operators (they may be followed by `by (...)` before their `(`)
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
        # literals
        "inf", "nan",
    }
)  # fmt: skip

# What Grafana puts in for its built-in variables (a scrape every few seconds).
GRAFANA_BUILTINS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
}


def metric_names(expr: str) -> set[str]:
    text = _STRINGS.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _NOT_METRICS}


def with_variables(expr: str, variables: dict[str, str]) -> str:
    """`expr` with Grafana's built-ins and the dashboard's own variables (`$name` and
    `${name}`) replaced, as Grafana does before it sends a query."""
    for name, value in GRAFANA_BUILTINS.items():
        expr = expr.replace(name, value)
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr
