"""`RecentTraffic`: the rates `/health` shows operators are the last minute's.

The counters are driven by hand and the clock is the test's, so each case says
exactly which requests a rate covers. (That the counters are the real ones, and
an instance's under gunicorn, is tested end to end in tests/api/test_status_page.py.)
"""

from __future__ import annotations

from dataclasses import replace

from core.infra.health import RecentTraffic, TrafficTotals


class Counters:
    """What the access middleware and the cache would have counted by now."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.totals = TrafficTotals(0.0, 0, 0, 0, 0, 0)

    def clock(self) -> float:
        return self.now

    def read(self, at: float) -> TrafficTotals:
        return replace(self.totals, at=at)

    def serve(self, seconds: int, *, per_second: int, errors: int = 0, hits: int = 0) -> None:
        """`per_second` requests a second for `seconds`, `errors` of them 5xx and
        `hits` of them answered from the cache (every request looks it up)."""
        for _ in range(seconds):
            t = self.totals
            self.totals = replace(
                t,
                requests=t.requests + per_second,
                server_errors=t.server_errors + errors,
                cache_hits=t.cache_hits + hits,
                cache_misses=t.cache_misses + per_second - hits,
            )
            self.now += 1


def traffic(counters: Counters) -> RecentTraffic:
    return RecentTraffic(window=60, every=2, read=counters.read, clock=counters.clock)


def test_rates_are_the_last_minute_not_since_start() -> None:
    counters = Counters()
    recent = traffic(counters)
    for _ in range(60):  # two quiet minutes, watched every 2 s
        counters.serve(2, per_second=1)
        recent.report()
    for _ in range(30):  # then a busy, failing minute
        counters.serve(2, per_second=10, errors=2, hits=5)
        report = recent.report()
    assert report["window_seconds"] == 60
    assert report["requests_per_second"] == 10
    assert report["server_errors_per_second"] == 2
    assert report["error_ratio"] == 0.2
    assert report["cache_hit_ratio"] == 0.5
    assert report["scope"] == "instance"
    assert len(recent.samples) <= 32  # a minute of readings, no more


def test_after_a_pause_the_window_says_how_long_it_is() -> None:
    counters = Counters()
    recent = traffic(counters)
    assert recent.report()["requests_per_second"] is None  # nothing to compare with yet
    counters.serve(600, per_second=1)  # ten minutes nobody looked
    report = recent.report()
    assert report["window_seconds"] == 600 and report["requests_per_second"] == 1
    counters.serve(5, per_second=4)
    report = recent.report()  # from the reading after the pause on
    assert report["window_seconds"] == 5 and report["requests_per_second"] == 4


def test_reads_the_counters_at_most_every_two_seconds() -> None:
    counters = Counters()
    reads = 0

    def read(at: float) -> TrafficTotals:
        nonlocal reads
        reads += 1
        return counters.read(at)

    recent = RecentTraffic(window=60, every=2, read=read, clock=counters.clock)
    counters.serve(3, per_second=1)
    first = recent.report()
    counters.serve(1, per_second=100)
    assert recent.report() == first and reads == 2  # start-up's and one more
    assert first["error_ratio"] == 0 and first["cache_hit_ratio"] == 0
