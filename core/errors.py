"""The error tree and the one error body every client sees.

Every failure that reaches a client is rendered as OpenAI's error shape plus
the request id, so the official SDKs map it to the right exception:

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...},
     "request_id": ...}

                              status  OpenAI type / code                  fault (below)
GatewayError                  500 api_error / internal_error              gateway_internal_error
├── BadRequestError           400 invalid_request_error                   caller_bad_request
│   ├── InvalidJSONError      400 invalid_request_error / invalid_json
│   └── ValidationFailedError 422 invalid_request_error / validation_error
├── AuthenticationError       401 authentication_error / invalid_api_key  caller_unauthenticated
├── PermissionDeniedError     403 permission_error                        caller_forbidden
├── NotFoundError             404 invalid_request_error / not_found       caller_not_found
├── ConflictError             409 invalid_request_error / conflict        caller_conflict
├── MethodNotAllowedError     405 invalid_request_error / method_not_allowed
│                                                                         caller_bad_request
├── RequestTimeoutError       408 timeout_error                           caller_timeout
├── PayloadTooLargeError      413 invalid_request_error / request_too_large
│                                                                         caller_too_large
├── RateLimitError            429 rate_limit_error / rate_limit_exceeded  policy_rate_limited
├── UpstreamError             502 upstream_error                          provider_error
├── ServiceUnavailableError   503 service_unavailable            gateway_dependency_unavailable
└── GatewayTimeoutError       504 timeout_error                           provider_timeout

The last column is each error's `fault`: the `error_type` label of
`http_requests_total` and `llm_requests_total`, one of a fixed set (`FAULTS`)
named for whose fault the failure is — `caller_*` (the request), `policy_*` (a
limit or a rule Skygate enforces), `provider_*` (upstream), `gateway_*`
(Skygate itself or its database and Redis) — so "Skygate is broken" and "a
provider is down" are different alerts. A few codes name a more precise fault
than their class (`_FAULT_BY_CODE`: `budget_exceeded` is `policy_budget_exceeded`,
`upstream_rate_limited` is `provider_rate_limited`, ...). Every error rendered
for an HTTP request notes its fault for the access metrics (`note_answered`).

Nothing here performs I/O or knows HTTP's machinery; the exception handlers that
answer with these errors are `core.http.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, ClassVar

import orjson

CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client closed the connection first"

# The fixed set of `error_type` label values, by whose fault (module docstring).
# A success has none: the empty string, which Prometheus stores as no label at all.
CALLER_DISCONNECTED = "caller_disconnected"
GATEWAY_INTERNAL = "gateway_internal_error"
STREAM_INTERRUPTED = "provider_stream_interrupted"
FAULTS = frozenset(
    {
        "caller_bad_request",
        "caller_unauthenticated",
        "caller_forbidden",
        "caller_not_found",
        "caller_conflict",
        "caller_timeout",
        "caller_too_large",
        "caller_upstream_rejected",  # the provider found the request itself invalid
        CALLER_DISCONNECTED,
        "policy_rate_limited",
        "policy_budget_exceeded",
        "policy_auth_throttled",
        "policy_model_not_allowed",
        "policy_feature_disabled",  # switched off by configuration (no admin key, no JWT)
        "provider_error",
        "provider_rejected",  # refused the gateway's credentials or configuration
        "provider_rate_limited",
        "provider_timeout",
        "provider_no_deployment",
        STREAM_INTERRUPTED,
        GATEWAY_INTERNAL,
        "gateway_dependency_unavailable",
    }
)


class GatewayError(Exception):
    """Base of every error Skygate renders to a client."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = "internal_error"
    default_message: ClassVar[str] = "The gateway could not complete the request."
    default_fault: ClassVar[str] = GATEWAY_INTERNAL

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = dict(headers or {})
        super().__init__(self.message)

    @property
    def fault(self) -> str:
        """Whose fault this error is, as the `error_type` metric label (`FAULTS`)."""
        return _FAULT_BY_CODE.get(self.code or "", self.default_fault)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code: ClassVar[str | None] = None
    default_message = "The request is invalid."
    default_fault = "caller_bad_request"


class InvalidJSONError(BadRequestError):
    default_code = "invalid_json"
    default_message = "The request body is not valid JSON."


class ValidationFailedError(BadRequestError):
    status_code = 422
    default_code = "validation_error"
    default_message = "The request body failed validation."


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"
    default_message = "Missing or invalid credentials."
    default_fault = "caller_unauthenticated"


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"
    default_message = "The credentials do not allow this request."
    default_fault = "caller_forbidden"


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"
    default_message = "The requested resource does not exist."
    default_fault = "caller_not_found"


class ConflictError(GatewayError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"
    default_message = "The request conflicts with the current state of the resource."
    default_fault = "caller_conflict"


class MethodNotAllowedError(GatewayError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"
    default_message = "The method is not allowed for this resource."
    default_fault = "caller_bad_request"


class RequestTimeoutError(GatewayError):
    status_code = 408
    error_type = "timeout_error"
    default_code = "request_timeout"
    default_message = "The request timed out."
    default_fault = "caller_timeout"


class PayloadTooLargeError(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"
    default_message = "The request body is too large."
    default_fault = "caller_too_large"


class RateLimitError(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    default_message = "Rate limit exceeded."
    default_fault = "policy_rate_limited"


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "bad_gateway"
    default_message = "The upstream provider failed."
    default_fault = "provider_error"


class ServiceUnavailableError(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "service_unavailable"
    default_message = "The service is temporarily unavailable."
    default_fault = "gateway_dependency_unavailable"


class GatewayTimeoutError(GatewayError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "gateway_timeout"
    default_message = "The upstream provider did not answer in time."
    default_fault = "provider_timeout"


# Codes whose fault is more precise than their class's.
_FAULT_BY_CODE: dict[str, str] = {
    "upstream_rejected": "caller_upstream_rejected",
    "request_header_fields_too_large": "caller_too_large",
    "budget_exceeded": "policy_budget_exceeded",
    "auth_throttled": "policy_auth_throttled",
    "model_not_allowed": "policy_model_not_allowed",
    "admin_disabled": "policy_feature_disabled",
    "tokens_unavailable": "policy_feature_disabled",
    "upstream_refused": "provider_rejected",
    "upstream_rate_limited": "provider_rate_limited",
    "no_deployment_available": "provider_no_deployment",
    "stream_interrupted": STREAM_INTERRUPTED,
}

_BY_STATUS: dict[int, type[GatewayError]] = {
    cls.status_code: cls
    for cls in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        MethodNotAllowedError,
        RequestTimeoutError,
        PayloadTooLargeError,
        ValidationFailedError,
        RateLimitError,
        UpstreamError,
        ServiceUnavailableError,
        GatewayTimeoutError,
    )
}


def error_for_status(status: int, message: str | None = None) -> GatewayError:
    """The GatewayError a bare HTTP status stands for (e.g. starlette's 404)."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = BadRequestError if 400 <= status < 500 else GatewayError
        err = cls(message)
        err.status_code = status  # type: ignore[misc]
        return err
    return cls(message)


def fault_for_status(status: int) -> str:
    """The fault of an answer that no GatewayError rendered (a bare status, e.g. the
    499 for a client gone before its body arrived): "" below 400."""
    if status < 400:
        return ""
    if status == CLIENT_CLOSED_REQUEST:
        return CALLER_DISCONNECTED
    cls = _BY_STATUS.get(status)
    if cls is None:
        return BadRequestError.default_fault if status < 500 else GATEWAY_INTERNAL
    return cls.default_fault


class AnsweredFault:
    """The fault of the error an HTTP request was answered with, noted by whoever
    rendered it (`error_body`, or a stream's error event) for the access middleware,
    which opens one per request (`answering`). A mutable slot in a context variable:
    the handlers, the thread pool and a streaming response's task all run in copies
    of the request's context, and every copy holds this same object."""

    __slots__ = ("fault",)

    def __init__(self) -> None:
        self.fault = ""


_ANSWERED: ContextVar[AnsweredFault | None] = ContextVar("skygate_answered_fault", default=None)


def answering() -> tuple[AnsweredFault, Any]:
    """A fresh slot for the request about to run, and the token to `done_answering`."""
    slot = AnsweredFault()
    return slot, _ANSWERED.set(slot)


def done_answering(token: Any) -> None:
    _ANSWERED.reset(token)


def note_answered(fault: str) -> None:
    """Note `fault` (an error's) as what the current HTTP request was answered with
    (nothing outside a request: a refusal the server writes itself, a background task)."""
    slot = _ANSWERED.get()
    if slot is not None:
        slot.fault = fault


_LOGGED = "_skygate_logged"


def mark_logged(exc: BaseException) -> None:
    """Note on the exception itself that it has been logged, for whoever catches it
    next (the last-resort middleware, `core.http.last_resort`). The note travels with
    the exception, so no per-request state carries it and no other request sees it."""
    setattr(exc, _LOGGED, True)


def was_logged(exc: BaseException) -> bool:
    return getattr(exc, _LOGGED, False) is True


def error_body(error: GatewayError, request_id: str | None) -> bytes:
    """The client's error body; every rendered error passes here, so here it is
    noted as the request's answer (`note_answered`)."""
    note_answered(error.fault)
    body = error.body()
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)
