"""A consecutive-failure circuit breaker, shared by Redis and LLM deployments.

closed --(N consecutive failures)--> open --(after `retry_after` s)--> half-open
half-open lets exactly one probe through: success closes, failure re-opens.
`on_change(ok)` is called once per transition, so callers log a state change
once rather than a line per request.
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

    @property
    def is_closed(self) -> bool:
        return self.opened_at is None

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
        was_open = self.opened_at is not None
        self.failures = 0
        self.opened_at = None
        self.probing = False
        if was_open and self.on_change:
            self.on_change(True, None)

    def record_failure(self, error: BaseException) -> None:
        self.failures += 1
        if self.opened_at is not None:
            self.opened_at = time.monotonic()  # a failed probe: another full period
            self.probing = False
            return
        if self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            if self.on_change:
                self.on_change(False, error)
