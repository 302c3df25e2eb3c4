"""The chat route's request-rate check for a caller with no HTTP request of its own:
a `chat.batch` job's requests, an agent run's model calls.

`api.deps.RequestAdmission` counts a route's request and answers 429 over the limit;
these callers wait instead. `RequestRate` counts the call once it passes (a refusal
counts nothing) and raises `Paced` with the limiter's wait; `admission_wait` reads the
same wait off a refusal the pipeline raised (the token limit), never off a budget
refusal or a provider's own 429, which are answers.
"""

from __future__ import annotations

from core.auth.authenticator import Principal
from core.config import Settings
from core.errors import GatewayError, RateLimitError
from core.limits.rate_limit import RateLimiter

MIN_WAIT_SECONDS = 0.05  # the limiter's wait is exact; this keeps a wake-up past the edge


class Paced(Exception):
    """The request rate is spent for now: wait `seconds`, then ask again."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class RequestRate:
    """One call's check, run at most once; `principal` may be replaced between tries
    (a key re-read meanwhile brings its current limits)."""

    __slots__ = ("limiter", "principal", "settings", "done")

    def __init__(self, limiter: RateLimiter, principal: Principal, settings: Settings) -> None:
        self.limiter = limiter
        self.principal = principal
        self.settings = settings
        self.done = False

    async def __call__(self) -> None:
        if self.done:
            return
        per_minute, per_hour = self.principal.request_limits(self.settings)
        decision = await self.limiter.admit(
            self.principal.limit_key, per_minute=per_minute, per_hour=per_hour
        )
        if not decision.allowed:
            raise Paced(max(decision.wait or decision.retry_after, MIN_WAIT_SECONDS))
        self.done = True


def admission_wait(error: GatewayError) -> float | None:
    """Seconds to wait when admission refused for the rate, else None."""
    if not isinstance(error, RateLimitError) or error.code != "rate_limit_exceeded":
        return None
    retry_after = error.headers.get("Retry-After", "1")
    return float(retry_after) if retry_after.isdigit() else 1.0
