"""A consecutive-failure circuit breaker, shared by Redis and LLM deployments.

closed --(N consecutive failures)--> open --(after `retry_after` s)--> half-open
half-open lets exactly one probe through: success closes, failure re-opens.

A caller with nowhere else to send calls (the last deployment of a model group
still in service) records failures with `may_open=False`: past the threshold the
circuit then stays closed but `tripped` ("held"), every call still goes through
and is the probe, and the first success clears it. Opening it would only turn
the upstream's real error into "nothing available" for everyone.

`on_change(ok, error)` is called once per transition (healthy -> held or open,
held -> open, either -> healthy), so callers log a state change once rather than
a line per request; `is_closed` tells an open circuit from a held one.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int,
        retry_after: float,
        on_change: Callable[[bool, BaseException | None], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.retry_after = retry_after
        self.on_change = on_change
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self.held = False  # past the threshold, kept closed by the caller's choice

    @property
    def is_closed(self) -> bool:
        return self.opened_at is None

    @property
    def tripped(self) -> bool:
        """Past the threshold: open, or held closed because the caller may not open it."""
        return self.opened_at is not None or self.held

    def remaining(self) -> float:
        """Seconds until a probe may go through (0 when closed or due)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.retry_after - (time.monotonic() - self.opened_at))

    def available(self) -> bool:
        """Would `allow()` let a call through now? (Does not claim the probe.)"""
        if self.opened_at is None:
            return True
        return not self.probing and self.remaining() == 0.0

    def allow(self) -> bool:
        """May a call go through now? In half-open, only one probe at a time."""
        if self.opened_at is None:
            return True
        if not self.available():
            return False
        self.probing = True
        return True

    def release(self) -> None:
        """A probe ended without a verdict (cancelled): let another one try."""
        self.probing = False

    def record_success(self) -> None:
        was_tripped = self.tripped
        self.failures = 0
        self.opened_at = None
        self.probing = False
        self.held = False
        if was_tripped and self.on_change:
            self.on_change(True, None)

    def record_failure(self, error: BaseException, *, may_open: bool = True) -> None:
        """One more consecutive failure. `may_open=False`: past the threshold, hold
        the circuit closed instead of opening it (see the module docstring)."""
        self.failures += 1
        if self.opened_at is not None:
            self.opened_at = time.monotonic()  # a failed probe: another full period
            self.probing = False
            return
        if self.failures < self.threshold:
            return
        if may_open:
            self.opened_at = time.monotonic()
            self.held = False
        elif self.held:
            return  # still held: no transition
        else:
            self.held = True
        if self.on_change:
            self.on_change(False, error)
