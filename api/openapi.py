"""The OpenAPI document Skygate publishes (`/openapi.json`, `/docs`) and fuzzes.

FastAPI describes what it can see in a route's signature. This module adds the
rest, so that the document is a contract a fuzzer can hold the gateway to
(`tests/security/test_fuzz.py`):

- one error body for every error status of every route — OpenAI's shape plus
  the request id, as `core.errors` renders it — including FastAPI's own 422,
  which `core.errors` also renders in that shape (FastAPI documents
  `HTTPValidationError`, which Skygate never sends);
- the error statuses a route can answer because of what wraps it, derived from
  its dependencies so a new route cannot forget them: authenticated routes
  answer 401 and 429, admin routes 403, routes with parameters 422, and every
  route 400/413 (the body-size middleware) and 500 (the last-resort handler);
- the request bodies of the LLM routes, which read their body raw: the schema is
  generated from `core.gateway.schemas`' models when the routes are defined, so it
  follows their allow-list;
- the shapes of the success bodies, in `api.bodies`.

Route decorators take `responses=` and `openapi_extra=` from here; documentation
only, nothing here runs per request. `install_openapi(app)` builds the document
once, on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel

from api.bodies import ChatCompletion, ChatCompletionChunk, EmbeddingList, ErrorResponse
from api.deps import admit, authenticate, require_admin
from core.gateway.schemas import ChatCompletionRequest, EmbeddingRequest

REF = "#/components/schemas/{model}"
ERROR_REF = {"$ref": REF.format(model="ErrorResponse")}
DESCRIPTIONS = {
    400: "The request is malformed (invalid JSON, an unknown field, a bad header).",
    401: "Missing or invalid credentials.",
    403: "The credentials do not allow this request.",
    404: "No such resource (or model).",
    409: "The request conflicts with the resource's state (a duplicate or finished job).",
    413: "The request body exceeds MAX_REQUEST_BODY_BYTES.",
    422: "A field has an invalid value.",
    429: "A rate limit, token limit, budget or failed-authentication throttle; see Retry-After.",
    500: "The gateway failed; the request id finds it in the logs.",
    502: "The provider failed or answered something unusable.",
    503: "A service the request needs is unavailable.",
    504: "The provider did not answer in time.",
}
EVERY_ROUTE = (400, 413, 500)
AUTHENTICATED = frozenset({authenticate, admit})  # PrincipalDep, CallerDep, AdminDep


# -- what route decorators use ---------------------------------------------------------------
def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for error statuses, all with the one error body."""
    return {
        status: {"model": ErrorResponse, "description": DESCRIPTIONS[status]} for status in statuses
    }


def json_body(model: type[BaseModel], description: str) -> dict[str, Any]:
    """`openapi_extra=` for a route that reads its JSON body itself. Its nested
    definitions are moved into the document's components by `build_openapi`."""
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


def stream(chunk: type[BaseModel], *, last: str = "`[DONE]`") -> dict[str, Any]:
    """The `text/event-stream` content of a streamed answer: one schema per event
    (OpenAPI 3.1 reads `schema` of an event stream as one event)."""
    return {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {
                        "type": "string",
                        "description": f"JSON: a {chunk.__name__} or an ErrorResponse "
                        f"(the stream failed after its first byte); last {last}.",
                        "contentMediaType": "application/json",
                    },
                    "event": {"type": "string"},
                },
            }
        }
    }


def ok(
    model: type[BaseModel], *error_statuses: int, status: int = 200, description: str = "OK"
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route answering `model`, and the errors only it can answer
    (the ones its dependencies answer are added by `build_openapi`)."""
    return {status: {"model": model, "description": description}, **errors(*error_statuses)}


def unavailable(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A probe's 503: the same body as its 200, saying what is wrong."""
    return {503: {"model": model, "description": "Not ready, or unhealthy."}}


LLM_ERRORS = errors(400, 403, 404, 422, 502, 503, 504)
CHAT_BODY = json_body(ChatCompletionRequest, "OpenAI's chat completion request.")
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "The completion; with `stream: true`, server-sent chunks.",
        "content": stream(ChatCompletionChunk),
    },
    **LLM_ERRORS,
}
EMBEDDINGS_BODY = json_body(EmbeddingRequest, "OpenAI's embeddings request.")
EMBEDDINGS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": EmbeddingList, "description": "One embedding per input."},
    **LLM_ERRORS,
}


# -- the document ------------------------------------------------------------------------------
def install_openapi(app: FastAPI) -> None:
    """Serve Skygate's document from `app.openapi()`, built once on first use."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description="OpenAI-compatible LLM gateway. Errors are OpenAI's error shape.",
        routes=app.routes,
    )
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    _hoist_body_definitions(document, schemas)
    schemas.update(_definitions(ErrorResponse))
    for name in ("HTTPValidationError", "ValidationError"):  # never sent: see core.errors
        schemas.pop(name, None)
    document["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "API key or JWT"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    }
    for route in _documented_routes(app):
        calls = _dependency_calls(route.dependant)
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            _document_errors(operation, calls)
    return document


def _documented_routes(app: FastAPI) -> Iterator[RouteContext]:
    """Every API route in the document, as FastAPI itself walks them (included
    routers are not flattened into `app.routes`)."""
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            yield route


def _dependency_calls(dependant: Dependant) -> set[Callable[..., Any]]:
    calls: set[Callable[..., Any]] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        if current.call is not None:
            calls.add(current.call)
        pending.extend(current.dependencies)
    return calls


def _route_errors(operation: dict[str, Any], calls: set[Callable[..., Any]]) -> set[int]:
    statuses = set(EVERY_ROUTE)
    if AUTHENTICATED & calls:
        statuses |= {401, 429}
    if require_admin in calls:
        statuses.add(403)
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(422)
    return statuses


def _document_errors(operation: dict[str, Any], calls: set[Callable[..., Any]]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if AUTHENTICATED & calls:
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
    documented = {int(code) for code in responses if code.isdigit()}
    for status in _route_errors(operation, calls) | documented:
        if status < 400:
            continue
        entry = responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
        content = entry.get("content", {}).get("application/json", {}).get("schema")
        if content is None or content.get("$ref", "").endswith("/HTTPValidationError"):
            entry["content"] = {"application/json": {"schema": ERROR_REF}}


def _hoist_body_definitions(document: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Move `$defs` of the raw-body schemas (`json_body`) into the components, and
    name the body itself there too, so every `$ref` resolves in the document."""
    for operation in _operations(document):
        content = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if not content or "$ref" in content.get("schema", {"$ref": None}):
            continue  # FastAPI's own bodies are references already
        schema = dict(content["schema"])
        schemas.update(schema.pop("$defs", {}))
        name = schema.get("title", operation["operationId"])
        schemas[name] = schema
        content["schema"] = {"$ref": REF.format(model=name)}


def _operations(document: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for item in document.get("paths", {}).values():
        yield from item.values()


def _definitions(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF)
    definitions: dict[str, Any] = schema.pop("$defs", {})
    definitions[model.__name__] = schema
    return definitions
