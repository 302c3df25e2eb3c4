"""What a litellm exception means for the router: a `ProviderError` by cause."""

from __future__ import annotations

from core.llm.litellm_import import litellm_module
from core.llm.types import Deployment, ProviderError


def provider_error(exc: BaseException, deployment: Deployment) -> ProviderError:
    litellm = litellm_module()
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", "") or exc)[:2000]
    retry_after = None
    # litellm keeps the provider's headers here; its `exc.response` is often its own, empty
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is not None:
        from core.llm.retry_after import parse_retry_after

        retry_after = parse_retry_after(headers)
    if isinstance(exc, litellm.Timeout):
        return ProviderError("timeout", f"{deployment.id} timed out")
    if isinstance(exc, litellm.APIConnectionError) and status in (None, 500):
        return ProviderError("connect", f"{deployment.id} failed: {message}")
    if isinstance(status, int):
        return ProviderError("status", message, status=status, retry_after=retry_after)
    return ProviderError("garbage", f"{deployment.id} failed: {message}")
