"""The memory cases of `bench.memory` as checks, a table and console lines: the
"Memory with every provider" part of benchmark.md and of PERFORMANCE.md's generated
section (through `bench.report`), and the summary of `python -m bench.memory`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Data = dict[str, Any]
# Issue #15's targets for master + 2 workers with all six providers configured.
PSS_TARGET_MIB = 400.0  # after traffic on each provider
STARTUP_TARGET_S = 3.0  # spawn to the first 200 on /ready
# name, goal, measured value (None: not measured), pass when, format of the value
CheckSpec = tuple[str, str, float | None, Callable[[float], bool], str]


def _case(memory: Data | None, name: str) -> Data | None:
    for case in (memory or {}).get("cases", []):
        if case["name"] == name:
            return dict(case)
    return None


def checks(memory: Data | None) -> list[CheckSpec]:
    """The issue #15 targets, on the case with all six providers."""
    case = _case(memory, "all")
    loaded = case["after_traffic"] if case else None
    failed = sum(case["failed_by_provider"].values()) if case else None
    return [
        (
            "all six providers, after traffic on each: PSS, master + 2 workers",
            f"<= {PSS_TARGET_MIB:g} MiB",
            loaded["total"]["pss_mib"] if loaded else None,
            lambda v: v <= PSS_TARGET_MIB,
            "{:.0f} MiB",
        ),
        (
            "all six providers: start to 200 on /ready",
            f"<= {STARTUP_TARGET_S:g} s",
            case["ready_s"] if case else None,
            lambda v: v <= STARTUP_TARGET_S,
            "{:.2f} s",
        ),
        (
            "all six providers: failed answers in the memory traffic",
            "0",
            failed,
            lambda v: v == 0,
            "{:.0f}",
        ),
    ]


def _row(case: Data, when: str) -> list[str]:
    r = case[when]
    return [
        case["label"],
        "idle" if when == "idle" else "after traffic",
        f"{r['total']['pss_mib']:.0f}",
        f"{r['master']['pss_mib']:.0f}",
        " / ".join(f"{w['pss_mib']:.0f}" for w in r["workers"]),
        f"{r['total']['rss_mib']:.0f}",
        f"{r['master']['rss_mib']:.0f}",
        " / ".join(f"{w['rss_mib']:.0f}" for w in r["workers"]),
        f"{r['total']['uss_mib']:.0f}",
    ]


def table(memory: Data) -> str:
    header = [
        "providers", "when", "PSS total", "PSS master", "PSS workers", "RSS total",
        "RSS master", "RSS workers", "USS total",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 7) + "|"]
    for case in memory["cases"]:
        for when in ("idle", "after_traffic"):
            if case[when]:
                lines.append("| " + " | ".join(_row(case, when)) + " |")
    return "\n".join(lines)


def case_lines(memory: Data) -> list[str]:
    result = []
    for case in memory["cases"]:
        failed = {k: v for k, v in case["failed_by_provider"].items() if v}
        result.append(
            f"- {case['label']}: `/ready` {case['ready_s']:.2f} s after the spawn, every "
            f"worker up at {case['all_workers_s']:.2f} s; traffic {case['traffic_s']:.1f} s, "
            "CPU per worker "
            + " / ".join(f"{s:.2f}" for s in case["worker_traffic_cpu_s"])
            + " s; "
            + (f"failed answers: {failed}" if failed else "every answer 200")
            + (f"; {case['worker_restarts']} worker(s) recycled" if case["worker_restarts"] else "")
            + "."
        )
    return result


def section(memory: Data, level: str = "##") -> str:
    per_provider = memory["rounds"] * len(memory["request_kinds"])
    return "\n".join(
        [
            f"{level} Memory with every provider",
            "",
            "`bench/memory.py`: Skygate under gunicorn with 2 workers (production setup), "
            "its providers configured by their environment variables alone, every base URL "
            "on the fake upstream. Idle: once the tree's CPU is flat after start-up. After "
            f"traffic: {per_provider} requests per provider ("
            + ", ".join(memory["request_kinds"])
            + f") over {memory['connections']} keep-alive connections spread over both "
            "workers, then quiet again. MiB, from /proc/PID/smaps_rollup: PSS splits each "
            "shared page between its users, so its total is what the machine holds (the "
            "target); RSS counts a shared page once per process; USS: pages no other "
            "process has.",
            "",
            table(memory),
            "",
            *case_lines(memory),
        ]
    )


def console_summary(memory: Data) -> str:
    lines = ["Skygate memory (master + 2 workers; PSS / RSS MiB)", ""]
    for case in memory["cases"]:
        idle, after = case["idle"]["total"], case["after_traffic"].get("total", {})
        lines.append(
            f"  {case['label']:<20} /ready {case['ready_s']:5.2f} s  idle {idle['pss_mib']:6.1f} / "
            f"{idle['rss_mib']:6.1f}  after traffic {after.get('pss_mib', 0):6.1f} / "
            f"{after.get('rss_mib', 0):6.1f}  failed {case['failed_by_provider']}"
        )
    return "\n".join(lines)
