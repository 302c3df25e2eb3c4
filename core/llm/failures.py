"""What a client sees when the router could not get an answer: the HTTP error
for every kind of upstream failure, and the outcome label it is counted under.

By cause (`ProviderError.kind`, `core.llm.types`):
- the request's own fault (upstream 400, 413, 422): the same status, the
  provider's message, `upstream_rejected`;
- the deployment's configuration (401, 403, 404 and other refusals a retry would
  meet again): 502 `upstream_refused`, without the provider's text (it may quote
  the key or name the upstream model; the log has it);
- a rate limit: 429 with the upstream's Retry-After; a timeout: 504; any other
  upstream failure (5xx, no connection, garbage, a cut): 502 `bad_gateway`;
- Skygate's own side failing (`local`): 500 `internal_error` and nothing more,
  since the cause is a bug or a missing module, logged once where it was caught;
- every deployment unavailable: 503 `no_deployment_available`.
"""

from __future__ import annotations

from core.errors import (
    BadRequestError,
    GatewayError,
    GatewayTimeoutError,
    PayloadTooLargeError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
    ValidationFailedError,
)
from core.llm.retry_after import retry_after_header
from core.llm.router import NoDeploymentAvailable
from core.llm.types import ProviderError

_REJECTED: dict[int, type[GatewayError]] = {
    413: PayloadTooLargeError,
    422: ValidationFailedError,
}


def to_gateway_error(error: ProviderError | NoDeploymentAvailable) -> GatewayError:
    """What the client sees when every attempt failed."""
    if isinstance(error, NoDeploymentAvailable):
        return ServiceUnavailableError(
            "Every deployment of this model is cooling down after failures; retry shortly.",
            code="no_deployment_available",
            headers=retry_after_header(error.retry_after),
        )
    if error.kind == "local":
        return GatewayError()
    if error.client_fault:
        rejected = _REJECTED.get(error.status or 400, BadRequestError)
        return rejected(
            error.message or "The provider rejected the request.", code="upstream_rejected"
        )
    if error.kind == "status" and error.status == 429:
        return RateLimitError(
            "The provider is rate limiting this model; retry later.",
            code="upstream_rate_limited",
            headers=retry_after_header(error.retry_after),
        )
    if error.kind == "status" and not error.retryable:
        return UpstreamError(
            f"The provider refused the gateway's credentials or configuration for this "
            f"model (status {error.status}); the request itself was not at fault.",
            code="upstream_refused",
        )
    if error.kind == "timeout":
        return GatewayTimeoutError()
    status = f" (status {error.status})" if error.status else ""
    return UpstreamError(f"The upstream provider failed{status}: {error.kind}.")


def failure_outcome(error: ProviderError | NoDeploymentAvailable) -> str:
    if isinstance(error, NoDeploymentAvailable):
        return "no_deployment"
    if error.kind == "local":
        return "internal_error"
    if error.client_fault:
        return "rejected"
    if error.kind == "status" and error.status == 429:
        return "rate_limited"
    return "timeout" if error.kind == "timeout" else "error"
