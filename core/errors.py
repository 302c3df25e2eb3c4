"""The error tree and the one error body every client sees.

Every failure that reaches a client is rendered as OpenAI's error shape plus
the request id, so the official SDKs map it to the right exception:

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...},
     "request_id": ...}

GatewayError                      500 api_error / internal_error
├── BadRequestError               400 invalid_request_error
│   ├── InvalidJSONError          400 invalid_request_error / invalid_json
│   └── ValidationFailedError     422 invalid_request_error / validation_error
├── AuthenticationError           401 authentication_error / invalid_api_key
├── PermissionDeniedError         403 permission_error
├── NotFoundError                 404 invalid_request_error / not_found
├── MethodNotAllowedError         405 invalid_request_error / method_not_allowed
├── RequestTimeoutError           408 timeout_error
├── PayloadTooLargeError          413 invalid_request_error / request_too_large
├── RateLimitError                429 rate_limit_error / rate_limit_exceeded
├── UpstreamError                 502 upstream_error
├── ServiceUnavailableError       503 service_unavailable
└── GatewayTimeoutError           504 timeout_error

Nothing here performs I/O; rendering to HTTP lives in `render_error` and the
handlers installed by `install_exception_handlers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

log = structlog.get_logger("skygate.errors")
CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client closed the connection first"


class GatewayError(Exception):
    """Base of every error Skygate renders to a client."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = "internal_error"
    default_message: ClassVar[str] = "The gateway could not complete the request."

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


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"
    default_message = "The credentials do not allow this request."


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"
    default_message = "The requested resource does not exist."


class ConflictError(GatewayError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"
    default_message = "The request conflicts with the current state of the resource."


class MethodNotAllowedError(GatewayError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"
    default_message = "The method is not allowed for this resource."


class RequestTimeoutError(GatewayError):
    status_code = 408
    error_type = "timeout_error"
    default_code = "request_timeout"
    default_message = "The request timed out."


class PayloadTooLargeError(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"
    default_message = "The request body is too large."


class RateLimitError(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"
    default_message = "Rate limit exceeded."


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "bad_gateway"
    default_message = "The upstream provider failed."


class ServiceUnavailableError(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "service_unavailable"
    default_message = "The service is temporarily unavailable."


class GatewayTimeoutError(GatewayError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "gateway_timeout"
    default_message = "The upstream provider did not answer in time."


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


_LOGGED = "_skygate_logged"


def mark_logged(exc: BaseException) -> None:
    """Note on the exception itself that it has been logged, for whoever catches it
    next (the last-resort middleware, `core.http.last_resort`). The note travels with
    the exception, so no per-request state carries it and no other request sees it."""
    setattr(exc, _LOGGED, True)


def was_logged(exc: BaseException) -> bool:
    return getattr(exc, _LOGGED, False) is True


def error_body(error: GatewayError, request_id: str | None) -> bytes:
    body = error.body()
    if request_id:
        body["request_id"] = request_id
    return orjson.dumps(body)


def render_error(error: GatewayError, request_id: str | None) -> Response:
    """The HTTP response for an error (the request-id header is added by the
    request-context middleware, like on every other response)."""
    return Response(
        error_body(error, request_id),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers,
    )


def _request_id(request: Request) -> str | None:
    rid = request.scope.get("state", {}).get("request_id")
    return rid if isinstance(rid, str) else None


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "The request body failed validation.", None
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    where = f" at '{param}'" if param else ""
    extra = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"Invalid request{where}: {message}{extra}", param


# PostgreSQL's "character not in repertoire" (a NUL byte in text) and "untranslatable
# character": the value came from the client, whichever route passed it on.
_UNSTORABLE_SQLSTATES = frozenset({"22021", "22P05"})


def client_fault(exc: BaseException) -> GatewayError | None:
    """The 4xx for an exception that is the client's doing although it surfaced deep
    down (the database refusing a NUL byte a client put in an id or a text), or None.
    One place for every route, so no route needs to guess which bytes a driver refuses."""
    if _unstorable_text(exc):
        log.info("unstorable_text")
        return BadRequestError(
            "The request contains a character that cannot be stored (a NUL byte or an "
            "invalid byte sequence) in a name, an id or a text field.",
            code="invalid_character",
        )
    return None


def _unstorable_text(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps: SQLAlchemy's DBAPIError, the driver's error)
    is the database refusing a client's bytes; found by SQLSTATE, so no driver import."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if getattr(seen, "sqlstate", None) in _UNSTORABLE_SQLSTATES:
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def install_exception_handlers(app: FastAPI) -> None:
    """Route every exception the app can raise through `render_error`."""

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return render_error(exc, _request_id(request))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"Unknown path: {request.url.path}"
        if exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"Method {request.method} is not allowed for {request.url.path}"
        err = error_for_status(exc.status_code, detail)
        err.headers.update(exc.headers or {})
        return render_error(err, _request_id(request))

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        message, param = _describe_validation(exc)
        first_type = exc.errors()[0].get("type") if exc.errors() else None
        err: GatewayError
        if first_type == "json_invalid":
            err = InvalidJSONError(message)
        else:
            err = ValidationFailedError(message, param=param)
        return render_error(err, _request_id(request))

    async def client_gone(request: Request, exc: Exception) -> Response:
        # The client left before its body arrived: nobody to answer, nothing wrong here.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def unhandled(request: Request, exc: Exception) -> Response:
        refused = client_fault(exc)
        if refused is not None:
            return render_error(refused, _request_id(request))
        log.error("unhandled_exception", exc_info=exc, path=request.url.path)
        mark_logged(exc)  # starlette re-raises it after this answer
        return render_error(GatewayError(), _request_id(request))

    app.add_exception_handler(GatewayError, gateway_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unhandled)
