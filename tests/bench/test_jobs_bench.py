"""The job benchmark in a tiny configuration, so it does not rot: the real stack
(gunicorn, one `python -m worker`, PostgreSQL, Redis, the fake upstream) and every
field the report renders."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from bench import jobs, report
from tests.support.servers import PostgresServer, RedisServer

TINY = jobs.JobsSettings(
    latency_jobs=20,
    interval_ms=10,
    enqueue_seconds=1,
    connections=4,
    batch_requests=20,
    batch_rpm=600,
    batch_concurrency=4,
)


def test_tiny_job_bench_reports_every_field(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    result = jobs.run(TINY, pg=postgres_server, redis=redis_server, workdir=tmp_path)
    data = json.loads(json.dumps(asdict(result)))  # what save() writes

    assert data["complete"] is True
    latency = data["latency"]
    assert latency["jobs"] == 20
    for name in ("from_202_ms", "from_post_ms", "row_started_from_202_ms", "submit_ms"):
        picks = latency[name]
        assert picks["min"] <= picks["p50"] <= picks["p90"] <= picks["p99"] <= picks["max"]
    # The handler runs after the POST left and after its row was started.
    assert latency["from_post_ms"]["min"] > 0
    assert latency["from_202_ms"]["p50"] < 5000

    enqueue = data["enqueue"]
    assert enqueue["jobs"] > 0 and enqueue["jobs_per_s"] > 0 and enqueue["errors"] == 0
    assert enqueue["drained_s"] >= enqueue["duration_s"] * 0.9
    assert enqueue["end_to_end_jobs_per_s"] > 0

    batch = data["batch"]
    assert batch["status"] == "success" and batch["answers"] == 20
    assert batch["errors"] == 0 and batch["rate_limited"] == 0 and batch["errors_by_code"] == {}
    assert batch["upstream_calls"] == 20  # each request sent once
    # Read from Redis; whether it equals the requests is a check of the report (a
    # finding when it does not), not of the bench's plumbing.
    assert batch["counted_by_limiter"] > 0
    # 20 requests fit in rpm 600's first window: not limit-bound, no share to claim.
    assert batch["limit_bound"] is False and batch["pct_of_limit"] is None
    assert batch["seconds"] > 0 and batch["achieved_rpm"] > 0

    checks = {check.name: check.status for check in report.jobs_checks(data)}
    limiter = "chat.batch: admissions counted by the shared (Redis) limiter"
    assert "FAIL" not in {name: status for name, status in checks.items() if name != limiter}
    assert checks["chat.batch: rate against the tenant's request limit"] == "n/a"
    section = report.jobs_section(data)
    assert section.startswith(report.JOBS_BEGIN) and section.endswith(report.JOBS_END)
    assert "enqueue-to-start" in section and "chat.batch" in section
    assert "Skygate job benchmark" in report.jobs_console_summary(data)

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "PERFORMANCE.md").write_text("# Performance\n\nkept\n")
    report.update_jobs_docs(data, docs)
    report.update_jobs_docs(data, docs)  # replaced in place, not appended twice
    text = (docs / "PERFORMANCE.md").read_text()
    assert text.startswith("# Performance\n\nkept\n") and text.count(report.JOBS_BEGIN) == 1


def test_ideal_client_waits_for_the_sliding_window() -> None:
    # A fresh window admits the whole limit at once, then one request every 60/rpm s
    # once the previous window's count slides out.
    assert jobs.ideal_seconds(600, 600, 10**8, start=6000.0) == 0.0
    start = 6000.0  # a minute boundary: 600 at once, the rest from the next window on
    seconds = jobs.ideal_seconds(1000, 600, 10**8, start=start)
    assert 60 + 40 * 0.95 <= seconds <= 60 + 40 * 1.05
    late = jobs.ideal_seconds(1000, 600, 10**8, start=start + 50)  # 10 s to the window's end
    assert 10 + 40 * 0.95 <= late <= 10 + 40 * 1.05


def test_percentiles_are_nearest_rank() -> None:
    picks = jobs.percentiles([float(v) for v in range(1, 101)])
    assert picks == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "min": 1.0, "max": 100.0}
