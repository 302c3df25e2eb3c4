"""deploy/grafana/skygate.json, the dashboard Skygate ships: a dashboard Grafana
imports (a `${datasource}` variable, every query panel on it, unique ids), with the
panels an operator needs, and every query it makes reads metrics that a live
Skygate exports and Prometheus accepts (scraped by a real Prometheus, `live.py`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.live import Fleet
from tests.deploy.promql import metric_names, with_variables
from tests.support.gateway import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "skygate.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What the issue asks the dashboard to show, by the metric that shows it.
REQUIRED = {
    "request and error rates by fault": "http_requests_total",
    "LLM errors by model group": "llm_requests_total",
    "latency by model group": "llm_request_duration_seconds_bucket",
    "time to first token": "llm_time_to_first_token_seconds_bucket",
    "time per output token": "llm_time_per_output_token_seconds_bucket",
    "overhead": "gateway_overhead_seconds_bucket",
    "tokens by tenant and model": "llm_tokens_total",
    "cost by tenant and model": "llm_cost_usd_total",
    "budget use by tenant": "tenant_budget_used_ratio",
    "cache hit ratio": "redis_cache_hits_total",
    "429s by limit": "rate_limit_refusals_total",
    "deployments cooling down": "llm_deployment_cooldown",
    "Redis state": "redis_available",
    "database state": "database_available",
    "worker heartbeat age": "worker_heartbeat_age_seconds",
    "queue depth": "jobs_queue_depth",
    "WebSocket connections": "websocket_connections_active",
}


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # a collapsed row holds its own


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) of every target."""
    return [
        (panel["title"], target["expr"])
        for panel in all_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def first_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each panel's first expression, by title."""
    found: dict[str, str] = {}
    for title, expr in queries(dashboard):
        found.setdefault(title, expr)
    return found


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable as "All" (its allValue): what a first visit shows."""
    return {
        variable["name"]: variable.get("allValue", ".*")
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    }


def test_it_is_a_grafana_dashboard_on_a_datasource_variable() -> None:
    dashboard = load()
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard["schemaVersion"] >= 39  # Grafana 11 and later
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert {"type", "title", "gridPos"} <= panel.keys(), panel
        position = panel["gridPos"]
        assert 0 <= position["x"] and position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({t["refId"] for t in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_it_shows_what_an_operator_needs() -> None:
    used = {name for _, expr in queries(load()) for name in metric_names(expr)}
    missing = {topic: name for topic, name in REQUIRED.items() if name not in used}
    assert not missing, f"no panel shows: {missing}"


def test_metric_names_are_read_out_of_promql() -> None:
    """The reader the live test relies on: functions, labels, groupings and
    strings are not metrics; every selector is."""
    expr = (
        'histogram_quantile(0.99, sum by (le, kind) (rate(a_bucket{kind="chat"}[5m]))) '
        '/ on() group_left max(b) and label_replace(c_total, "x", "$1", "y", "(z)") > 1e-9'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c_total"}


@pytest.mark.slow
def test_every_panel_query_reads_exported_metrics_and_evaluates(fleet: Fleet) -> None:
    """The live half: each metric a panel queries exists in Prometheus after scraping
    Skygate (and its worker), and each query, with the variables filled in as
    Grafana would, is one Prometheus evaluates."""
    dashboard = load()
    exported = fleet.prometheus.metric_names()
    values = variable_values(dashboard)
    missing: dict[str, set[str]] = {}
    for title, expr in queries(dashboard):
        absent = metric_names(expr) - exported
        if absent:
            missing.setdefault(title, set()).update(absent)
        fleet.prometheus.query(with_variables(expr, values))  # raises unless it evaluates
    assert not missing, f"panels query metrics Skygate does not export: {missing}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
            assert metric is not None and metric.group(1) in exported, variable["name"]


@pytest.mark.slow
def test_the_headline_panels_have_data(fleet: Fleet) -> None:
    """After the traffic `live.py` sends, the panels an operator opens first show
    it: requests by status, errors by fault, TTFT and cost by tenant."""
    dashboard = load()
    values = variable_values(dashboard)
    by_title = first_queries(dashboard)
    for title in (
        "Requests by status",
        "Errors by whose fault",
        "Time to first token",
        "Time per output token",
        "Tokens / s by tenant",
        "Deployments cooling down",
        "Worker heartbeat age",
    ):
        expr = with_variables(by_title[title], values)
        result = fleet.prometheus.query(f"last_over_time(({expr})[5m:1s])")["result"]
        assert result, f"{title}: no data for {expr}"


@pytest.mark.slow
def test_errors_by_fault_separate_the_provider_from_the_caller(fleet: Fleet) -> None:
    """The traffic had a provider failing (502) and an unknown model (404): the
    fault panel tells them apart."""
    dashboard = load()
    expr = with_variables(first_queries(dashboard)["Errors by whose fault"], {})
    result = fleet.prometheus.query(f"last_over_time(({expr})[5m:1s])")["result"]
    faults = {row["metric"]["fault"] for row in result}
    assert {"provider", "caller", "policy"} <= faults, faults
    assert "gateway" not in faults, result
