"""The exposition of Skygate's metrics (`core.observability.metrics`): a scrape of
this process or of the whole gunicorn instance (the multiprocess directory), the
master's and each worker's process metrics, and cheap counter readings for the
JSON views (`/metrics/cache`, `/health`'s traffic)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from core.observability.metrics import MASTER_PID_ENV, MULTIPROC_ENV


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def _read_stat(pid: int) -> tuple[float, float, float, int] | None:
    """(cpu seconds, rss bytes, start time since boot in s, open fds) of a live pid."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (float(parts[11]) + float(parts[12])) / ticks
    rss = float(parts[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss, float(parts[19]) / ticks, fds


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


class GunicornProcessCollector(Collector):
    """Process metrics for the gunicorn master and each live worker, by pid.

    prometheus-client's ProcessCollector reports only the process that happens to
    answer the scrape; summing per-process CPU counters across recycled workers
    would go backwards. One series per live process (labels `pid`, `role`) keeps
    every counter monotonic and shows each worker's memory.
    """

    def __init__(self, master_pid: int) -> None:
        self.master_pid = master_pid
        try:
            self.boot = _boot_time()
        except OSError:
            self.boot = 0.0

    def _pids(self) -> list[tuple[int, str]]:
        pids = [(self.master_pid, "master")]
        try:
            children = (
                Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children").read_text().split()
            )
        except OSError:
            children = []
        pids.extend((int(c), "worker") for c in children)
        return pids

    def collect(self) -> Iterable[Metric]:
        labels = ["pid", "role"]
        cpu = CounterMetricFamily(
            "process_cpu_seconds_total", "Total user and system CPU time.", labels=labels
        )
        rss = GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size.", labels=labels
        )
        start = GaugeMetricFamily(
            "process_start_time_seconds", "Process start time (unix epoch).", labels=labels
        )
        fds = GaugeMetricFamily("process_open_fds", "Open file descriptors.", labels=labels)
        for pid, role in self._pids():
            stat = _read_stat(pid)
            if stat is None:
                continue
            values = [str(pid), role]
            cpu.add_metric(values, stat[0])
            rss.add_metric(values, stat[1])
            start.add_metric(values, self.boot + stat[2])
            fds.add_metric(values, stat[3])
        return [cpu, rss, start, fds]


def render_latest() -> tuple[bytes, str]:
    """The exposition body and content type for a scrape of this process."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    master = os.environ.get(MASTER_PID_ENV)
    registry.register(GunicornProcessCollector(int(master) if master else os.getpid()))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def counter_samples(*names: str) -> list[Sample]:
    """Every `<name>_total` sample of these counters, each label set summed over
    every worker of this instance (dead ones included, so the values never go
    down). Only the counter files are read, not the histograms: cheap enough for
    `/health` to call every few seconds (`core.infra.health.RecentTraffic`)."""
    path = multiprocess_dir()
    families: Iterable[Metric]
    if path is None:
        families = REGISTRY.collect()
    else:
        files = glob.glob(os.path.join(path, "counter_*.db"))
        families = multiprocess.MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
    wanted = {name + "_total" for name in names}
    return [sample for family in families for sample in family.samples if sample.name in wanted]


def counter_totals(*names: str) -> dict[str, float]:
    """Sum of each counter over every label set and every worker (for JSON views)."""
    path = multiprocess_dir()
    if path is None:
        registry: CollectorRegistry = REGISTRY
    else:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    totals = dict.fromkeys(names, 0.0)
    for family in registry.collect():
        if family.name in totals:
            totals[family.name] += sum(
                s.value for s in family.samples if s.name == family.name + "_total"
            )
    return totals
