"""What a client sees when the router could not get an answer: the HTTP error
for every kind of upstream failure, and the outcome label it is counted under."""

from __future__ import annotations

from core.errors import (
    BadRequestError,
    GatewayError,
    GatewayTimeoutError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
)
from core.llm.retry_after import retry_after_header
from core.llm.router import NoDeploymentAvailable
from core.llm.types import ProviderError


def to_gateway_error(error: ProviderError | NoDeploymentAvailable) -> GatewayError:
    """What the client sees when every attempt failed."""
    if isinstance(error, NoDeploymentAvailable):
        return ServiceUnavailableError(
            "Every deployment of this model is cooling down after failures; retry shortly.",
            code="no_deployment_available",
            headers=retry_after_header(error.retry_after),
        )
    if error.client_fault:
        return BadRequestError(
            error.message or "The provider rejected the request.", code="upstream_rejected"
        )
    if error.kind == "status" and error.status == 429:
        return RateLimitError(
            "The provider is rate limiting this model; retry later.",
            code="upstream_rate_limited",
            headers=retry_after_header(error.retry_after),
        )
    if error.kind == "timeout":
        return GatewayTimeoutError()
    status = f" (status {error.status})" if error.status else ""
    return UpstreamError(f"The upstream provider failed{status}: {error.kind}.")


def failure_outcome(error: ProviderError | NoDeploymentAvailable) -> str:
    if isinstance(error, NoDeploymentAvailable):
        return "no_deployment"
    if error.client_fault:
        return "rejected"
    if error.kind == "status" and error.status == 429:
        return "rate_limited"
    return "timeout" if error.kind == "timeout" else "error"
