"""Every exception the app can raise, answered as an OpenAI-shaped error
(`core.errors` defines them and their bodies; this is where they meet HTTP):
`install_exception_handlers` routes each through `render_error`, and
`client_fault` turns a failure that surfaced deep down but was the client's doing
(bytes the database refuses) into its 4xx."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from core.errors import (
    CLIENT_CLOSED_REQUEST,
    BadRequestError,
    GatewayError,
    InvalidJSONError,
    ValidationFailedError,
    error_body,
    error_for_status,
    mark_logged,
)

log = structlog.get_logger("skygate.errors")


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
