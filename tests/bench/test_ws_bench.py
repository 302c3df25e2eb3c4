"""The WebSocket benchmark in a tiny configuration, so it does not rot: the real stack
(two gunicorn instances of 2 workers, PostgreSQL, Redis, the fake upstream), idle
sessions from a separate process, and every field the report renders."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from bench import ws, ws_report
from tests.support.servers import PostgresServer, RedisServer

TINY = ws.WsSettings(connections=30, runs=2, chunks=20, chunk_delay_ms=2, open_concurrency=10)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_ws_bench_reports_every_field(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    result = ws.run(TINY, pg=postgres_server, redis=redis_server, workdir=tmp_path)
    data = json.loads(json.dumps(asdict(result)))  # what save() writes

    assert data["complete"] is True
    memory = data["memory"]
    assert memory["connections"] == 30 and memory["sessions_counted"] == 30
    for when in ("before", "open", "closed", "second_round_closed"):
        assert memory[when]["pss_mib"] > 0 and memory[when]["rss_mib"] > 0
    assert len(memory["pss_added_by_process_mib"]) == 3  # the master and 2 workers
    assert memory["open_seconds"] > 0 and memory["other_cores"] >= 0

    for key in ("same_instance", "cross_instance"):
        phase = data[key]
        assert phase["runs"] == 2 and phase["statuses"] == {"run.completed": 2}
        assert phase["missing"] == 0 and phase["duplicates"] == 0
        # 20 deltas per run, plus the run's other events (created, status, completed...)
        assert phase["events"] + phase["replayed"] == phase["frames"] > 2 * 20
        picks = phase["latency_ms"]
        assert 0 < picks["min"] <= picks["p50"] <= picks["p90"] <= picks["p99"] <= picks["max"]
        assert picks["p50"] < 1000
    assert data["same_instance"]["replayed"] == 0  # its creator sees everything live
    assert data["cross_instance"]["replayed"] >= 1  # run.created came before the subscribe

    statuses = {check.name: check.status for check in ws_report.checks(data)}
    assert len(statuses) == 5 and "n/a" not in statuses.values()
    assert statuses["every event exactly once (across instances)"] == "pass"
    section = ws_report.section(data)
    assert section.startswith(ws_report.BEGIN) and section.endswith(ws_report.END)
    assert "### WebSocket" in section and "across instances" in section
    assert "Skygate WebSocket benchmark" in ws_report.console_summary(data)

    docs = tmp_path / "docs"
    docs.mkdir()
    head = f"# Performance\n\n{ws_report.AFTER}\n\n## Findings\n"
    (docs / "PERFORMANCE.md").write_text(head)
    ws_report.update_docs(data, docs)
    ws_report.update_docs(data, docs)  # replaced in place, not added twice
    text = (docs / "PERFORMANCE.md").read_text()
    assert text.count(ws_report.BEGIN) == 1 and text.endswith("\n\n## Findings\n")
    assert text.index(ws_report.AFTER) < text.index(ws_report.BEGIN)
