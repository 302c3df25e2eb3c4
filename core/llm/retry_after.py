"""An upstream's "retry after" hint, whatever form it arrives in, as seconds.

Providers send `retry-after-ms` (OpenAI, Azure) or `Retry-After` as
delta-seconds (RFC 9110 says digits; fractions are seen in practice) or as an
HTTP-date. Anything else is ignored, so the router's own backoff, retry and
fallback apply: `30s`, `-5`, `nan`, `inf`, `1e309`, garbage bytes and empty
values all read as None. A date in the past is 0 (retry now); a very long wait
is capped at `MAX_RETRY_AFTER_SECONDS`, far above any router's
`max_retry_after_seconds`, so it still means "move on to the next deployment".
Nothing here raises: a provider's header must never turn into a 500 (a
`Retry-After: 30s` once raised ValueError out of the direct path).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from datetime import UTC
from typing import Any

MAX_RETRY_AFTER_SECONDS = 86_400.0  # a day: "not soon", whatever larger number was sent
_DELTA = re.compile(r"[0-9]{1,40}(?:\.[0-9]{1,40})?")
_MAX_HEADER = 64  # an HTTP-date is 29 characters; anything this long is not a hint


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After`, or None.

    `headers` is any mapping with `.get` (aiohttp's, httpx's, a dict)."""
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        value = _delta(millis)
        if value is not None:
            return value / 1000
    text = _header(headers, "retry-after")
    if text is None:
        return None
    seconds = _delta(text)
    return seconds if seconds is not None else _http_date(text)


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """`{"Retry-After": whole seconds, at least 1}` for a client, or {} when there
    is no usable figure. Rounded up, so a client never comes back too early."""
    if seconds is None or not math.isfinite(seconds):
        return {}
    return {"Retry-After": str(max(1, math.ceil(min(seconds, MAX_RETRY_AFTER_SECONDS))))}


def _header(headers: Any, name: str) -> str | None:
    try:
        value = headers.get(name)
    except Exception:  # a headers object we do not know: no hint, not a failure
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if 0 < len(value) <= _MAX_HEADER else None


def _delta(text: str) -> float | None:
    """Delta-seconds: digits with an optional fraction, nothing else."""
    if _DELTA.fullmatch(text) is None:
        return None
    return min(float(text), MAX_RETRY_AFTER_SECONDS)  # 40 digits is finite: no overflow


def _http_date(text: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    try:
        seconds = when.timestamp() - time.time()
    except (OverflowError, ValueError, OSError):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)
