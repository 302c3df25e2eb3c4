"""CPU time and memory of process trees, read from /proc (Linux only, stdlib only).

A *tree* is a set of root PIDs plus every live descendant (found by parent PID), so a
gunicorn master and its workers, or a LiteLLM proxy and its uvicorn workers, count as one.

CPU: per process ``utime + stime + cutime + cstime``. The ``c*`` fields hold the CPU of
children the process has already reaped, so a worker recycled in the middle of a measurement
is still counted (its time moves from its own entry to its parent's). Resolution is one clock
tick (10 ms), which is why CPU per request is only reported over whole cells.

Memory: resident set size summed over the tree (shared pages of forked workers are counted
once per process, which is what "sum over all processes" means), and PSS from
``/proc/PID/smaps_rollup`` (shared pages split between their users) for comparison.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Stat:
    pid: int
    ppid: int
    ticks: int  # utime + stime + cutime + cstime
    rss_pages: int


def _read_stat(pid: int) -> _Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces or ')'.
    fields = raw.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie's CPU is already in its parent's cutime once reaped
        return None
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return _Stat(pid=pid, ppid=int(fields[1]), ticks=ticks, rss_pages=int(fields[21]))


def _all_stats() -> dict[int, _Stat]:
    stats: dict[int, _Stat] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def _tree(roots: Iterable[int], stats: Mapping[int, _Stat]) -> list[_Stat]:
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    seen: set[int] = set()
    todo = [pid for pid in roots if pid in stats]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
    return [stats[pid] for pid in sorted(seen)]


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, /proc/stat), for noise checks."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    guest = sum(ticks[8:10]) if len(ticks) > 9 else 0  # already counted in user/nice
    return (sum(ticks) - idle - guest) / CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class TreeSnapshot:
    """One reading of a process tree."""

    cpu_seconds: float
    rss_bytes: int
    pss_bytes: int
    pids: tuple[int, ...]

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / MIB

    @property
    def pss_mib(self) -> float:
        return self.pss_bytes / MIB


def snapshot(roots: Iterable[int], *, pss: bool = True) -> TreeSnapshot:
    """CPU seconds so far, RSS and PSS of the tree under ``roots``."""
    procs = _tree(roots, _all_stats())
    return TreeSnapshot(
        cpu_seconds=sum(p.ticks for p in procs) / CLOCK_TICKS,
        rss_bytes=sum(p.rss_pages for p in procs) * PAGE_SIZE,
        pss_bytes=sum(_pss_bytes(p.pid) for p in procs) if pss else 0,
        pids=tuple(p.pid for p in procs),
    )


def snapshots(groups: Mapping[str, Iterable[int]], *, pss: bool = True) -> dict[str, TreeSnapshot]:
    """`snapshot` for several trees from one scan of /proc."""
    stats = _all_stats()
    result: dict[str, TreeSnapshot] = {}
    for name, roots in groups.items():
        procs = _tree(roots, stats)
        result[name] = TreeSnapshot(
            cpu_seconds=sum(p.ticks for p in procs) / CLOCK_TICKS,
            rss_bytes=sum(p.rss_pages for p in procs) * PAGE_SIZE,
            pss_bytes=sum(_pss_bytes(p.pid) for p in procs) if pss else 0,
            pids=tuple(p.pid for p in procs),
        )
    return result


@dataclass
class _Peak:
    rss_bytes: int = 0
    pss_bytes: int = 0
    pids: set[int] = field(default_factory=set)


class PeakSampler:
    """Samples the RSS and PSS of some trees in a thread and keeps the peak of each sum.

    Use as a context manager around the measured interval; read `peak_rss_mib(name)`,
    `peak_pss_mib(name)` and `pids_seen(name)` afterwards.
    """

    def __init__(self, groups: Mapping[str, Iterable[int]], interval: float = 0.25) -> None:
        self._groups = {name: tuple(roots) for name, roots in groups.items()}
        self._interval = interval
        self._peaks = {name: _Peak() for name in self._groups}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        for name, snap in snapshots(self._groups).items():
            peak = self._peaks[name]
            peak.rss_bytes = max(peak.rss_bytes, snap.rss_bytes)
            peak.pss_bytes = max(peak.pss_bytes, snap.pss_bytes)
            peak.pids.update(snap.pids)

    def peak_rss_mib(self, name: str) -> float:
        return self._peaks[name].rss_bytes / MIB

    def peak_pss_mib(self, name: str) -> float:
        return self._peaks[name].pss_bytes / MIB

    def pids_seen(self, name: str) -> set[int]:
        return set(self._peaks[name].pids)
