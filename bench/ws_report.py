"""The WebSocket benchmark's report (`bench.ws`): its checks against issue #13's goals,
the console table and the "WebSocket" section of docs/PERFORMANCE.md.

The section sits between its own markers and is replaced in place, like the Jobs
section (`bench.report.update_jobs_docs`); the first time it goes right after the
generated section. Only PERFORMANCE.md: `bench.run` rewrites benchmark.md whole.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.report import Check
from bench.report import _table as table

GOALS = {"memory_mib": 50.0, "same_p99_ms": 10.0, "cross_p99_ms": 20.0}
BEGIN, END = "<!-- bench:ws:begin -->", "<!-- bench:ws:end -->"
AFTER = "<!-- bench:generated:end -->"
PHASES = (("same_instance", "same instance"), ("cross_instance", "across instances"))
Data = dict[str, Any]


def checks(data: Data) -> list[Check]:
    result = []
    memory = data.get("memory") or {}
    name = f"{memory.get('connections', 1000):,} idle sessions: memory added (PSS, 2 workers)"
    goal = f"<= {GOALS['memory_mib']:g} MiB"
    if memory:
        added = memory["added_pss_mib"]
        status = "pass" if added <= GOALS["memory_mib"] else "FAIL"
        result.append(Check(name, goal, f"{added:.1f} MiB", status))
    else:
        result.append(Check(name, goal, "not measured", "n/a"))
    for key, label in PHASES:
        limit = GOALS["same_p99_ms" if key == "same_instance" else "cross_p99_ms"]
        phase = data.get(key) or {}
        name, goal = f"event latency {label}, p99", f"<= {limit:g} ms"
        if not phase:
            result.append(Check(name, goal, "not measured", "n/a"))
            continue
        p99 = phase["latency_ms"]["p99"]
        result.append(Check(name, goal, f"{p99:.2f} ms", "pass" if p99 <= limit else "FAIL"))
        lost = phase["missing"] + phase["duplicates"]
        result.append(
            Check(
                f"every event exactly once ({label})",
                "0 missing, 0 twice",
                f"{phase['missing']} missing, {phase['duplicates']} twice",
                "pass" if lost == 0 else "FAIL",
            )
        )
    return result


def latency_line(phase: Data) -> str:
    lat = phase["latency_ms"]
    return (
        f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms over {phase['events']} events "
        f"({phase['missing']} missing, {phase['duplicates']} twice)"
    )


def _latency_row(label: str, phase: Data) -> list[str]:
    lat = phase["latency_ms"]
    return [
        f"event latency, {label}: p50 / p90 / p99 / max (ms)",
        f"{lat['p50']:.2f} / {lat['p90']:.2f} / {lat['p99']:.2f} / {lat['max']:.2f}",
        f"{phase['events']:,} events of {phase['runs']} runs; {phase['coalesced_frames']} "
        f"merged frames; {phase['replayed']} replayed (not timed); "
        f"other cpu {phase['other_cores']:.2f} cores",
    ]


def _memory_rows(m: Data) -> list[list[str]]:
    def trio(kind: str) -> str:
        return " / ".join(f"{m[when][kind]:.1f}" for when in ("before", "open", "closed"))

    return [
        [
            f"PSS of master + 2 workers: idle / {m['connections']:,} sessions / closed (MiB)",
            trio("pss_mib"),
            f"+{m['added_pss_mib']:.1f} MiB = {m['pss_kib_per_connection']:.1f} KiB per "
            f"session; opened in {m['open_seconds']:.1f} s; other cpu "
            f"{m['other_cores']:.2f} cores",
        ],
        [
            "RSS, the same (MiB)",
            trio("rss_mib"),
            f"+{m['added_rss_mib']:.1f} MiB = {m['rss_kib_per_connection']:.1f} KiB per session",
        ],
        [
            f"PSS kept after closing; after a second round of {m['connections']:,} (MiB)",
            f"+{m['retained_pss_mib']:.1f}; +{m['second_round_growth_pss_mib']:.1f} more",
            "kept by the allocators for reuse when the second round adds little; a leak "
            "when it adds as much as the first",
        ],
    ]


def section(data: Data) -> str:
    s = data["settings"]
    rows = _memory_rows(data["memory"])
    rows += [_latency_row(label, data[key]) for key, label in PHASES]
    done = "" if data.get("complete", True) else " **The run did not complete.**"
    intro = (
        f"`python -m bench.ws` ({data['run_id']}, {data['elapsed_s']:.0f} s): Skygate under "
        "gunicorn (2 workers, production setup) on PostgreSQL and Redis. Memory: idle "
        "sessions authenticated with a tenant key (`Authorization: Bearer`), opened by "
        "another process. Latency: arrival at the client minus the event's `ts` (when the "
        f"engine emitted it), runs of {s['chunks']} text deltas {s['chunk_delay_ms']:g} ms "
        "apart from the fake upstream. Same instance: the client that created the run (the "
        "run executes on the worker holding its socket). Across instances: a client on a "
        "second instance (same database and Redis) subscribed to runs created on the first, "
        "through the Redis run streams. `other cpu`: what processes outside the benchmark "
        "used meanwhile (the machine's noise; 2 CPUs in all)." + done
    )
    checks_rows = [[c.name, c.goal, c.measured, f"**{c.status}**"] for c in checks(data)]
    return "\n".join(
        [
            BEGIN,
            "<!-- Written by bench/ws.py from bench/results/ws-latest.json. -->",
            "",
            "### WebSocket",
            "",
            intro,
            "",
            table(["measure", "value", "how"], rows, "lrl"),
            "",
            table(["target", "goal", "measured", "result"], checks_rows),
            END,
        ]
    )


def update_docs(data: Data, docs: Path) -> Path:
    """The section of PERFORMANCE.md, replaced in place."""
    path, text = docs / "PERFORMANCE.md", section(data)
    old = path.read_text() if path.exists() else "# Performance\n"
    if BEGIN in old and END in old:
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
        new = pattern.sub(lambda _: text, old, count=1)
    elif AFTER in old:
        new = old.replace(AFTER, f"{AFTER}\n\n{text}", 1)
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)
    return path


def console_summary(data: Data) -> str:
    m = data["memory"]
    lines = [
        f"Skygate WebSocket benchmark {data['run_id']} ({data['elapsed_s']:.0f} s)",
        "",
        f"  {m['connections']} idle sessions: +{m['added_pss_mib']:.1f} MiB PSS "
        f"({m['pss_kib_per_connection']:.1f} KiB each), +{m['added_rss_mib']:.1f} MiB RSS; "
        f"other cpu {m['other_cores']:.2f} cores",
    ]
    for key, label in PHASES:
        phase = data[key]
        lines.append(
            f"  {label}: {latency_line(phase)}; other cpu {phase['other_cores']:.2f} cores"
        )
    lines.append("")
    results = checks(data)
    width = max(len(check.name) for check in results)
    for check in results:
        lines.append(
            f"  [{check.status:^4}] {check.name:<{width}}  {check.measured}  (goal {check.goal})"
        )
    return "\n".join(lines)
