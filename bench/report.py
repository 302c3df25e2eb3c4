"""Turn a benchmark results file into docs: tables, the chart, the checks against the targets.

    python -m bench.report [bench/results/latest.json]   # re-render docs/ from a saved run

Writes ``docs/benchmark.md`` (every table), ``docs/benchmark.png`` (the chart) and the
generated section of ``docs/PERFORMANCE.md``, between the markers below; the rest of
PERFORMANCE.md (how to run, findings) is written by people and left alone.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import memory_report

BEGIN = "<!-- bench:generated:begin -->"
END = "<!-- bench:generated:end -->"
ROOT = Path(__file__).resolve().parents[1]
TARGET_ORDER = {"direct": 0, "skygate": 1, "litellm": 2, "skygate-warning": 3, "skygate-traced": 4}
MODE_LABEL = {"unique": "unique (miss)", "identical": "identical (hit)", "stream": "stream"}

Cell = dict[str, Any]
Data = dict[str, Any]


# --------------------------------------------------------------------------- lookups


def find(data: Data, target: str, latency: float, concurrency: int, mode: str) -> Cell | None:
    cell: Cell
    for cell in data["cells"] + data.get("variants", []):
        if (
            cell["target"] == target
            and cell["latency_ms"] == latency
            and cell["concurrency"] == concurrency
            and cell["mode"] == mode
        ):
            return cell
    return None


def ratio(data: Data, cell: Cell) -> float | None:
    """The cell's req/s over the LiteLLM proxy's in the same cell."""
    proxy = find(data, "litellm", cell["latency_ms"], cell["concurrency"], cell["mode"])
    if proxy is None or not proxy["rps"]:
        return None
    return float(cell["rps"]) / float(proxy["rps"])


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Check:
    name: str
    goal: str
    measured: str
    status: str  # pass | FAIL | n/a


def _threshold(
    name: str, goal: str, value: float | None, ok: Callable[[float], bool], fmt: str
) -> Check:
    if value is None:
        return Check(name, goal, "not measured", "n/a")
    return Check(name, goal, fmt.format(value), "pass" if ok(value) else "FAIL")


def checks(data: Data) -> list[Check]:
    result = []
    compare_hint = "n/a (run `make bench-compare`)"

    def versus(mode: str, times: float, label: str) -> Check:
        cell = find(data, "skygate", 0, 16, mode)
        proxy = find(data, "litellm", 0, 16, mode)
        goal = f">= {times:g}x the LiteLLM proxy"
        if cell is None:
            return Check(label, goal, "not measured", "n/a")
        if proxy is None:
            return Check(label, goal, f"{cell['rps']:.0f} req/s; {compare_hint}", "n/a")
        r = float(cell["rps"]) / float(proxy["rps"]) if proxy["rps"] else float("inf")
        return Check(
            label,
            goal,
            f"{r:.1f}x ({cell['rps']:.0f} vs {proxy['rps']:.0f} req/s)",
            "pass" if r >= times else "FAIL",
        )

    result.append(versus("unique", 10, "0 ms upstream, 16 clients, unique bodies: req/s"))
    unique = find(data, "skygate", 0, 16, "unique")
    result.append(
        _threshold(
            "0 ms upstream, 16 clients, unique bodies: CPU per request",
            "<= 1 ms (master + workers)",
            unique["cpu_ms_per_req"] if unique else None,
            lambda v: v <= 1.0,
            "{:.3f} ms",
        )
    )
    result.append(versus("stream", 10, "0 ms upstream, 16 clients, streaming: req/s"))
    result.append(versus("identical", 20, "0 ms upstream, 16 clients, cache hits: req/s"))
    slow = find(data, "skygate", 50, 16, "unique")
    result.append(
        _threshold(
            "50 ms upstream, 16 clients: added latency at p50",
            "<= 3 ms over direct",
            slow["added_p50_ms"] if slow else None,
            lambda v: v <= 3.0,
            "{:.2f} ms",
        )
    )
    result.append(
        _threshold(
            "50 ms upstream, 16 clients: added latency at p99",
            "<= 10 ms over direct",
            slow["added_p99_ms"] if slow else None,
            lambda v: v <= 10.0,
            "{:.2f} ms",
        )
    )
    starts = [s for s in data["startups"] if s["target"] == "skygate"]
    result.append(
        _threshold(
            # PSS: the workers share the pages the master loaded before forking (RSS
            # counts each of those once per process).
            "idle memory, master + 2 workers (PSS sum, worst start)",
            "<= 250 MiB",
            max((s["idle_pss_mib"] for s in starts), default=None),
            lambda v: v <= 250,
            "{:.0f} MiB",
        )
    )
    result.append(
        _threshold(
            "start to first 200 (worst start)",
            "<= 3 s",
            max((s["first_200_s"] for s in starts), default=None),
            lambda v: v <= 3.0,
            "{:.2f} s",
        )
    )
    sky = [c for c in data["cells"] if c["target"] == "skygate"]
    errors = sum(c["errors"] for c in sky)
    requests = sum(c["requests"] for c in sky)
    result.append(
        Check(
            "errors over every Skygate cell",
            "0",
            f"{errors} of {requests} requests" if sky else "not measured",
            ("pass" if errors == 0 else "FAIL") if sky else "n/a",
        )
    )
    result += [_threshold(*spec) for spec in memory_report.checks(data.get("memory"))]
    return result


# --------------------------------------------------------------------------- formatting


def _mode(cell: Cell) -> str:
    mode = str(cell["mode"])
    return MODE_LABEL.get(mode, mode)


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _rps(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _table(header: list[str], rows: Iterable[list[str]], align: str | None = None) -> str:
    align = align or "l" * len(header)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _sorted(cells: Iterable[Cell]) -> list[Cell]:
    modes = {"unique": 0, "identical": 1, "stream": 2}
    return sorted(
        cells,
        key=lambda c: (
            c["latency_ms"],
            c["concurrency"],
            modes.get(c["mode"], 9),
            TARGET_ORDER.get(c["target"], 9),
        ),
    )


def checks_table(data: Data) -> str:
    rows = [[c.name, c.goal, c.measured, f"**{c.status}**"] for c in checks(data)]
    return _table(["target", "goal", "measured", "result"], rows)


def cells_table(data: Data, cells: Iterable[Cell]) -> str:
    rows = []
    for c in _sorted(cells):
        r = ratio(data, c) if c["target"] not in {"direct", "litellm"} else None
        hit = c.get("cache_hit_ratio")
        notes = []
        if c.get("worker_restarts"):
            notes.append(f"{c['worker_restarts']} worker restarts")
        if (c.get("attempts") or 1) > 1:
            notes.append(f"{c['attempts']} attempts")
        rows.append(
            [
                f"{c['latency_ms']:g} ms",
                str(c["concurrency"]),
                _mode(c),
                c["label"] + (f" ({', '.join(notes)})" if notes else ""),
                _rps(c["rps"]),
                f"{r:.1f}x" if r is not None else "—",
                _num(c["p50_ms"]),
                _num(c["p99_ms"]),
                _num(c.get("added_p50_ms")),
                _num(c.get("added_p99_ms")),
                str(c["errors"]),
                _num(c["cpu_ms_per_req"], 3),
                _num(c["peak_rss_mib"], 0),
                f"{hit:.0%}" if hit is not None else "—",
                _num(c.get("redis_calls_per_req"), 1),
                _num(c.get("other_cores"), 2),
            ]
        )
    header = [
        "upstream", "clients", "bodies", "target", "req/s", "× proxy", "p50 ms", "p99 ms",
        "+p50 ms", "+p99 ms", "errors", "CPU ms/req", "peak MiB", "cache hits", "Redis cmds/req",
        "noise cores",
    ]  # fmt: skip
    return _table(header, rows, "rrllrrrrrrrrrrrr")


def startup_table(data: Data) -> str:
    rows = []
    for s in sorted(
        data["startups"], key=lambda s: (TARGET_ORDER.get(s["target"], 9), s["latency_ms"])
    ):
        rows.append(
            [
                s["label"],
                f"{s['latency_ms']:g} ms",
                _num(s["first_200_s"]),
                _num(s["all_workers_s"]),
                _num(s["first_completion_s"]),
                str(s["processes"]),
                _num(s["idle_rss_mib"], 0),
                _num(s["idle_pss_mib"], 0),
                _num(s.get("rss_after_load_mib"), 0),
                f"{s['idle_cpu_cores']:.1%}" if s.get("idle_cpu_cores") is not None else "—",
            ]
        )
    header = [
        "target", "upstream", "first 200 s", "all workers up s", "first completion s",
        "processes", "idle RSS MiB", "idle PSS MiB", "RSS after load MiB", "idle CPU (core)",
    ]  # fmt: skip
    return _table(header, rows, "lrrrrrrrrr")


def upstream_table(data: Data) -> str:
    rows = []
    for c in _sorted(c for c in data["cells"] if c["target"] == "direct"):
        during = [
            o["upstream_cores"]
            for o in data["cells"]
            if o["target"] != "direct"
            and (o["latency_ms"], o["concurrency"], o["mode"])
            == (c["latency_ms"], c["concurrency"], c["mode"])
        ]
        rows.append(
            [
                f"{c['latency_ms']:g} ms",
                str(c["concurrency"]),
                _mode(c),
                _rps(c["rps"]),
                _num(c["p50_ms"]),
                _num(c["p99_ms"]),
                _num(c["cpu_ms_per_req"], 3),
                f"{c['upstream_cores']:.0%}",
                f"{max(during):.0%}" if during else "—",
                f"{c['loadgen_cores']:.0%}",
            ]
        )
    header = [
        "upstream", "clients", "bodies", "req/s alone", "p50 ms", "p99 ms", "CPU ms/req",
        "core used alone", "core used behind a gateway (max)", "wrk core used",
    ]  # fmt: skip
    return _table(header, rows, "rrlrrrrrrr")


def variant_table(
    data: Data, target: str = "skygate-warning", base_label: str = "INFO", label: str = "WARNING"
) -> str:
    """A variant's cells (`target`) beside the headline Skygate cells they vary."""
    rows = []
    for v in _sorted(c for c in data.get("variants", []) if c["target"] == target):
        base = find(data, "skygate", v["latency_ms"], v["concurrency"], v["mode"])
        rows.append(
            [
                f"{v['latency_ms']:g} ms",
                str(v["concurrency"]),
                _mode(v),
                _rps(base["rps"]) if base else "—",
                _rps(v["rps"]),
                _num(base["cpu_ms_per_req"], 3) if base else "—",
                _num(v["cpu_ms_per_req"], 3),
                _num(base["p50_ms"]) if base else "—",
                _num(v["p50_ms"]),
            ]
        )
    header = [
        "upstream", "clients", "bodies", f"req/s {base_label}", f"req/s {label}",
        f"CPU ms/req {base_label}", f"CPU ms/req {label}", f"p50 ms {base_label}",
        f"p50 ms {label}",
    ]  # fmt: skip
    return _table(header, rows, "rrlrrrrrr")


def problems_section(data: Data) -> str:
    problems = data.get("log_problems") or {}
    if not problems:
        return "No warnings, errors or non-2xx answers in the gateways' logs."
    parts = []
    for name, found in problems.items():
        lines = [f"**{name}**", ""]
        for key, count in sorted(found["counts"].items(), key=lambda kv: -kv[1])[:15]:
            lines.append(f"- {count} × `{key}`")
        if found["samples"]:
            lines += ["", "<details><summary>sample lines</summary>", "", "```"]
            lines += [s[:600] for s in found["samples"][:6]]
            lines += ["```", "", "</details>"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def commit_line(data: Data) -> str:
    commit = data["machine"].get("skygate_commit")
    return f" Skygate at `{commit}`." if commit else ""


def machine_line(data: Data) -> str:
    m = data["machine"]
    text = (
        f"{m['cpus_usable']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, {m['os']}, "
        f"kernel {m['kernel']}, Python {m['python']}; {m['wrk']}; {m['redis']}; {m['postgresql']}"
    )
    if m.get("litellm_proxy"):
        text += f"; LiteLLM proxy {m['litellm_proxy']}"
    return text


def settings_line(data: Data) -> str:
    s = data["settings"]
    return (
        f"{s['duration']:g} s per cell after {s['warmup']:g} s of warm-up, wrk with "
        f"{s['wrk_threads']} thread(s); LiteLLM proxy cache: {s['litellm_cache']}"
        + (f"; extra Skygate settings: {s['gateway_env']}" if s.get("gateway_env") else "")
    )


def _command(data: Data) -> str:
    return "make bench-compare" if data["settings"]["compare"] else "make bench"


def benchmark_markdown(data: Data) -> str:
    variants = data.get("variants") or []
    parts = [
        "# Skygate benchmark: latest run",
        "",
        f"Generated by `{_command(data)}` ({data['run_id']}, {data['elapsed_s']:.0f} s in all)."
        + commit_line(data)
        + " How it is measured and what it means: [PERFORMANCE.md](PERFORMANCE.md).",
        "",
        f"Machine: {machine_line(data)}.",
        "",
        f"Run: {settings_line(data)}."
        + ("" if data.get("complete", True) else " **The run did not complete.**"),
        "",
        "![requests per second and CPU per request](benchmark.png)",
        "",
        "## Targets",
        "",
        checks_table(data),
        "",
        "## Start-up and memory",
        "",
        "Start-up is from spawning the master to the first 200 on the liveness probe "
        "(`/live`; the proxy's `/health/liveliness`). Memory is the sum over every process of "
        "the gateway (RSS counts pages shared by forked workers once per process; PSS splits "
        "them), measured 3 s after the first completion, before any load; idle CPU over the last "
        "2 of those seconds.",
        "",
        startup_table(data),
        "",
        "## Every cell",
        "",
        "`+p50`/`+p99`: latency added over direct (the same requests straight to the fake "
        "upstream, in the same cell). `CPU ms/req`: CPU time of the target's whole process "
        "tree over the cell divided by completed requests (for direct: the upstream's). "
        "`peak MiB`: highest RSS sum sampled during the cell. `cache hits`: answers marked "
        "as cache hits (`x-cache: hit`, LiteLLM's `x-litellm-cache-key`). `Redis cmds/req`: "
        "commands the Redis server ran per request during the cell (`INFO commandstats`; "
        "which ones: `redis_calls` in the JSON). `noise cores`: CPU "
        "used during the cell by everything not measured (idle gateways, other users of the "
        "machine); above 0.25 the cell was measured again and the quieter attempt kept "
        "(`attempts`). `worker restarts`: gunicorn workers recycled during the cell or its warm-up "
        "(`MAX_REQUESTS`).",
        "",
        cells_table(data, data["cells"]),
        "",
        "## The upstream is not the bottleneck",
        "",
        "The fake upstream alone (one process), and the share of a core it used while a "
        "gateway was in front of it.",
        "",
        upstream_table(data),
    ]
    if any(v["target"] == "skygate-warning" for v in variants):
        parts += [
            "",
            "## Skygate at LOG_LEVEL=WARNING",
            "",
            "The headline numbers use the production default `LOG_LEVEL=INFO` (one JSON access "
            "line per request). Without access lines:",
            "",
            variant_table(data),
        ]
    if any(v["target"] == "skygate-traced" for v in variants):
        parts += [
            "",
            "## Skygate with tracing on",
            "",
            "The headline numbers run with tracing off (no `OTEL_EXPORTER_OTLP_ENDPOINT`: "
            "nothing is installed). Here every request is traced: a server span and a GenAI "
            "span per upstream attempt, batched and exported over OTLP/HTTP to a local sink "
            f"(`bench/otlp_sink.py`; it received {data['settings'].get('otlp_sink', {})}).",
            "",
            variant_table(data, "skygate-traced", "off", "traced"),
        ]
    if data.get("memory"):
        parts += ["", memory_report.section(data["memory"])]
    parts += ["", "## Warnings and errors in the gateways' logs", "", problems_section(data), ""]
    return "\n".join(parts)


def performance_section(data: Data) -> str:
    return "\n".join(
        [
            BEGIN,
            "<!-- Written by bench/report.py on every run; edit outside these markers. -->",
            "",
            f"Latest run: `{_command(data)}`, {data['started']} ({data['elapsed_s']:.0f} s)."
            f"{commit_line(data)} Machine: {machine_line(data)}. {settings_line(data)}.",
            "",
            "### Targets",
            "",
            checks_table(data),
            "",
            "### Start-up and memory",
            "",
            startup_table(data),
            "",
            *([memory_report.section(data["memory"], "###"), ""] if data.get("memory") else []),
            "### Every cell",
            "",
            cells_table(data, data["cells"]),
            "",
            "More (the upstream alone, the LOG_LEVEL=WARNING variant, log warnings): "
            "[benchmark.md](benchmark.md). Chart: [benchmark.png](benchmark.png).",
            END,
        ]
    )


def update_performance(path: Path, data: Data) -> None:
    section = performance_section(data)
    text = path.read_text() if path.exists() else "# Performance\n\n## Latest numbers\n\n"
    if BEGIN in text and END in text:
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


# --------------------------------------------------------------------------- jobs

# The job benchmark (`bench.jobs`, results/jobs-latest.json) has its own section in
# both docs, between its own markers: `bench.jobs` replaces it in place, and
# `write_docs` puts it back after regenerating benchmark.md, so neither run erases
# the other's numbers.
JOBS_BEGIN = "<!-- bench:jobs:begin -->"
JOBS_END = "<!-- bench:jobs:end -->"
JOBS_RESULTS = ROOT / "bench" / "results" / "jobs-latest.json"


def jobs_checks(jobs: Data) -> list[Check]:
    batch = jobs.get("batch") or {}
    if not batch:
        return [Check("chat.batch", "measured", "not measured", "n/a")]
    share = batch.get("pct_of_limit")
    rate = (
        Check(
            "chat.batch: rate against the tenant's request limit",
            ">= 80 % of an ideal client's",
            "not limit-bound (the first window admits the whole batch)",
            "n/a",
        )
        if share is None
        else _threshold(
            "chat.batch: rate against the tenant's request limit",
            ">= 80 % of an ideal client's",
            share,
            lambda v: v >= 80.0,
            "{:.1f} %",
        )
    )

    def zero(name: str, value: int, of: str) -> Check:
        return Check(name, "0", f"{value} of {of}", "pass" if value == 0 else "FAIL")

    requests = f"{batch['requests']} requests"
    calls = batch["upstream_calls"]
    return [
        rate,
        zero("chat.batch: 429 results", batch["rate_limited"], requests),
        zero("chat.batch: per-request errors", batch["errors"], requests),
        Check(
            "chat.batch: upstream calls (each request sent once)",
            f"{batch['requests']}",
            str(calls),
            "pass" if calls == batch["requests"] and batch["status"] == "success" else "FAIL",
        ),
        Check(
            "chat.batch: admissions counted by the shared (Redis) limiter",
            f"{batch['requests']} (none admitted by a worker's in-memory fallback)",
            str(batch.get("counted_by_limiter", "not measured")),
            "pass" if batch.get("counted_by_limiter") == batch["requests"] else "FAIL",
        ),
        zero(
            "enqueue through the API: errors",
            (jobs.get("enqueue") or {}).get("errors", 0),
            f"{(jobs.get('enqueue') or {}).get('jobs', 0)} jobs",
        ),
    ]


def jobs_table(jobs: Data) -> str:
    lat, enq, batch = jobs["latency"], jobs["enqueue"], jobs["batch"]
    s = jobs["settings"]

    def pair(p: dict[str, float]) -> str:
        return f"{p['p50']:.2f} / {p['p99']:.2f}"

    share = batch.get("pct_of_limit")
    rows = [
        ["enqueue-to-start, 202 → handler's first line (p50 / p99 ms)",
         pair(lat["from_202_ms"]),
         f"{lat['jobs']} no-op jobs, one every {lat['interval_ms']:g} ms"],
        ["enqueue-to-start, POST sent → handler's first line (p50 / p99 ms)",
         pair(lat["from_post_ms"]), "includes the API's answer"],
        ["202 → the row's `started_at` (p50 / p99 ms)", pair(lat["row_started_from_202_ms"]),
         "the runner's counted start, before the handler"],
        ["POST /api/v1/jobs round trip (p50 / p99 ms)", pair(lat["submit_ms"]), "one at a time"],
        ["enqueue throughput through the API (jobs/s)", _rps(enq["jobs_per_s"]),
         f"{enq['tool']}, c{enq['connections']}, {enq['duration_s']:.0f} s, "
         f"p50 {enq['p50_ms']:.1f} / p99 {enq['p99_ms']:.1f} ms, {enq['errors']} errors, "
         f"gateway CPU {_num(enq['gateway_cpu_ms_per_job'], 3)} ms/job"],
        ["enqueued and run, end to end (jobs/s)", _rps(enq["end_to_end_jobs_per_s"]),
         f"{enq['jobs']} jobs drained {enq['drained_s']:.1f} s after the first POST; "
         f"worker CPU {_num(enq['worker_cpu_ms_per_job'], 3)} ms/job"],
        [f"chat.batch of {batch['requests']} at rpm {batch['rpm_limit']} (s)",
         f"{batch['seconds']:.1f}",
         f"ideal client {batch['ideal_seconds']:.1f} s; concurrency {batch['concurrency']}; "
         f"queued {batch['queue_wait_s'] * 1000:.0f} ms; {batch['status']}"],
        ["chat.batch: % of the request limit", f"{share:.1f} %" if share is not None else "—",
         f"{_num(batch['achieved_rpm'], 0)} requests/min over the batch "
         f"({_num(batch['pct_of_rpm_over_batch'], 0)} % of rpm, first window's burst included)"],
        ["chat.batch: 429s / other errors / upstream calls",
         f"{batch['rate_limited']} / {batch['errors'] - batch['rate_limited']} / "
         f"{batch['upstream_calls']}", f"batch concurrency {s['batch_concurrency']}"],
        ["chat.batch: admissions counted by the shared limiter",
         str(batch.get("counted_by_limiter", "—")),
         "its Redis hour windows; the rest passed a worker's in-memory fallback"],
    ]  # fmt: skip
    return _table(["measure", "value", "how"], rows, "lrl")


def jobs_section(jobs: Data, level: str = "##") -> str:
    done = "" if jobs.get("complete", True) else " **The run did not complete.**"
    return "\n".join(
        [
            JOBS_BEGIN,
            "<!-- Written by bench/report.py from bench/results/jobs-latest.json. -->",
            "",
            f"{level} Jobs",
            "",
            f"`python -m bench.jobs` ({jobs['run_id']}, {jobs['elapsed_s']:.0f} s): Skygate "
            "under gunicorn (2 workers) and one `python -m worker` on PostgreSQL and Redis, "
            "the fake upstream at 0 ms. Enqueue-to-start is open loop (no job waits behind "
            "another); the batch's share of the limit is an ideal client's time (each "
            "request sent the instant the same sliding-window limiter admits it, from the "
            "batch's start) over the batch's own." + done,
            "",
            jobs_table(jobs),
            "",
            _table(
                ["target", "goal", "measured", "result"],
                [[c.name, c.goal, c.measured, f"**{c.status}**"] for c in jobs_checks(jobs)],
            ),
            JOBS_END,
        ]
    )


def _replace_jobs(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if JOBS_BEGIN in text and JOBS_END in text:
        pattern = re.compile(re.escape(JOBS_BEGIN) + ".*?" + re.escape(JOBS_END), re.DOTALL)
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def update_jobs_docs(jobs: Data, docs: Path) -> list[Path]:
    """The Jobs section of benchmark.md and PERFORMANCE.md, replaced in place."""
    docs.mkdir(parents=True, exist_ok=True)
    written = []
    for name, level in (("benchmark.md", "##"), ("PERFORMANCE.md", "###")):
        path = docs / name
        _replace_jobs(path, jobs_section(jobs, level))
        written.append(path)
    return written


def jobs_console_summary(jobs: Data) -> str:
    lines = [f"Skygate job benchmark {jobs['run_id']} ({jobs['elapsed_s']:.0f} s)", ""]
    lat, enq, batch = jobs["latency"], jobs["enqueue"], jobs["batch"]
    lines.append(
        f"  enqueue-to-start (202 -> handler): p50 {lat['from_202_ms']['p50']:.2f} ms, "
        f"p99 {lat['from_202_ms']['p99']:.2f} ms ({lat['jobs']} jobs)"
    )
    lines.append(
        f"  enqueue through the API: {enq['jobs_per_s']:.1f} jobs/s ({enq['tool']}, "
        f"c{enq['connections']}); end to end {enq['end_to_end_jobs_per_s']:.1f} jobs/s"
    )
    share = batch.get("pct_of_limit")
    lines.append(
        f"  chat.batch of {batch['requests']} at rpm {batch['rpm_limit']}: {batch['seconds']:.1f} s"
        f" (ideal {batch['ideal_seconds']:.1f} s) = "
        + (f"{share:.1f} % of the limit" if share is not None else "not limit-bound")
        + f"; {batch['rate_limited']} 429s, {batch['errors']} errors"
    )
    lines.append("")
    for check in jobs_checks(jobs):
        lines.append(f"  [{check.status:^4}] {check.name}  {check.measured}  (goal {check.goal})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- chart


def write_chart(data: Data, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = data["cells"]
    latencies = sorted({c["latency_ms"] for c in cells})
    targets = sorted({c["target"] for c in cells}, key=lambda t: TARGET_ORDER.get(t, 9))
    labels = {c["target"]: c["label"] for c in cells}
    colors = {"direct": "#9e9e9e", "skygate": "#1f77b4", "litellm": "#ff7f0e"}
    groups = sorted(
        {(c["mode"], c["concurrency"]) for c in cells},
        key=lambda g: (["unique", "identical", "stream"].index(g[0]), g[1]),
    )
    fig, axes = plt.subplots(
        2, len(latencies), figsize=(7.5 * len(latencies), 9), squeeze=False, sharey="row"
    )
    width = 0.8 / max(1, len(targets))
    metrics = [("rps", "requests/s (log)"), ("cpu_ms_per_req", "CPU ms per request (log)")]
    for col, latency in enumerate(latencies):
        for row, (metric, ylabel) in enumerate(metrics):
            ax = axes[row][col]
            for i, target in enumerate(targets):
                xs, ys = [], []
                for g, (mode, concurrency) in enumerate(groups):
                    cell = find(data, target, latency, concurrency, mode)
                    if cell is not None and cell.get(metric):
                        xs.append(g + (i - (len(targets) - 1) / 2) * width)
                        ys.append(cell[metric])
                label = labels[target] + (" (upstream's CPU)" if target == "direct" and row else "")
                ax.bar(xs, ys, width, label=label, color=colors.get(target))
            ax.set_yscale("log")
            ax.set_xticks(range(len(groups)))
            ax.set_xticklabels([f"{m}\nc={c}" for m, c in groups], fontsize=8)
            ax.grid(axis="y", which="both", alpha=0.3)
            ax.set_title(f"upstream latency {latency:g} ms: {ylabel.split(' (')[0]}")
            if col == 0:
                ax.set_ylabel(ylabel)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    fig.suptitle(
        f"Skygate benchmark ({data['run_id']}, 2 gunicorn workers, "
        f"{data['machine']['cpus_usable']} CPUs)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- entry points


def write_docs(data: Data, docs: Path) -> list[Path]:
    docs.mkdir(parents=True, exist_ok=True)
    written = []
    markdown = docs / "benchmark.md"
    markdown.write_text(benchmark_markdown(data))
    written.append(markdown)
    chart = docs / "benchmark.png"
    try:
        write_chart(data, chart)
        written.append(chart)
    except ImportError as exc:
        print(f"[bench] no chart ({exc}): pip install -r bench/requirements.txt", file=sys.stderr)
    performance = docs / "PERFORMANCE.md"
    update_performance(performance, data)
    written.append(performance)
    if JOBS_RESULTS.exists():  # benchmark.md was rewritten whole: put the Jobs section back
        import json

        update_jobs_docs(json.loads(JOBS_RESULTS.read_text()), docs)
    return written


def console_summary(data: Data) -> str:
    lines = [f"Skygate benchmark {data['run_id']} ({data['elapsed_s']:.0f} s)", ""]
    results = checks(data)
    width = max(len(check.name) for check in results)
    for check in results:
        lines.append(
            f"  [{check.status:^4}] {check.name:<{width}}  {check.measured}  (goal {check.goal})"
        )
    if data.get("memory"):
        lines += ["", memory_report.console_summary(data["memory"])]
    lines.append("")
    lines.append(f"  {'cell':<26} {'target':<28} {'req/s':>9} {'p50':>8} {'p99':>8} "
                 f"{'+p50':>7} {'CPU/req':>8} {'err':>5}")  # fmt: skip
    for c in _sorted(data["cells"]):
        cell = f"{c['latency_ms']:g} ms c{c['concurrency']} {c['mode']}"
        lines.append(
            f"  {cell:<26} {c['label']:<28} {c['rps']:>9.1f} {c['p50_ms']:>8.2f} "
            f"{c['p99_ms']:>8.2f} {_num(c.get('added_p50_ms')):>7} "
            f"{_num(c['cpu_ms_per_req'], 3):>8} {c['errors']:>5}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import json

    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else ROOT / "bench" / "results" / "latest.json"
    data = json.loads(path.read_text())
    for written in write_docs(data, ROOT / "docs"):
        print(f"wrote {written}")
    print(console_summary(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
