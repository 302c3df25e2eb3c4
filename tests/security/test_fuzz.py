"""The fuzz pass: schemathesis over the gateway's own OpenAPI document.

Every operation in the document (`api/openapi.py`) is sent cases that
schemathesis generates from it — valid ones, and invalid ones where the
operation takes input — as the admin, as a tenant and with no credential (or a
random one), through the in-process app with its real lifespan, real Redis and
PostgreSQL, and the LLM routes routed to the fake upstream (a real HTTP server).
Every answer must be no 5xx, have a documented status and content type, and
match the documented schema; a streamed answer's every chunk too.

Cases are drawn by schemathesis and Hypothesis (derandomized, so a run is
reproducible) and sent with the fixture's httpx client on the test's event
loop: schemathesis' own ASGI transport would run the app on a loop of its own,
apart from the fixtures' servers and the app's connections. A failing case is
reported with its curl command.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from pydantic import TypeAdapter, ValidationError
from schemathesis import Case, GenerationMode
from schemathesis.checks import (  # the registry of checks, by name
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup

from api.bodies import ChatCompletionChunk, ErrorResponse
from main_enterprise import create_app
from tests.support.app import make_settings
from tests.support.llm import LLMApp

ADMIN = "fuzz-admin-key-0123456789abcdef"
JWT_SECRET = "fuzz-jwt-secret-0123456789abcdef0123456789"
BASE_URL = "http://skygate.test"
CHAT_MODELS = ["primary", "fast", "backup", "solo", "claude"]
EMBED_MODELS = ["embed"]
KEY_ID = "fuzz-key-id"  # stands for the stored key the keys routes are pointed at
# Examples per operation and kind: enough to reach every branch the document
# describes, few enough for the file to run in about 30 s on two cores (drawing a
# case costs ~40 ms of CPU, sending one ~5-15 ms). Steered operations whose only
# steered input is an existing id need few; the bodies need more.
EXAMPLES = {"positive": 8, "negative": 8}
STEERED_EXAMPLES = {
    "POST /api/v1/chat/completions": 20,
    "POST /api/v1/embeddings": 10,
    "PATCH /api/v1/keys/{key_id}": 12,
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
STREAM_EVENT: TypeAdapter[ChatCompletionChunk | ErrorResponse] = TypeAdapter(
    ChatCompletionChunk | ErrorResponse
)
CREDENTIAL_HEADERS = ("authorization", "x-api-key")
LLM_OPERATIONS = ("POST /api/v1/chat/completions", "POST /api/v1/embeddings")
KEY_OPERATIONS = (
    "POST /api/v1/keys",
    "GET /api/v1/keys",
    "GET /api/v1/keys/{key_id}",
    "PATCH /api/v1/keys/{key_id}",
    "DELETE /api/v1/keys/{key_id}",
)
TEXT_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "additionalProperties": False,
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {"type": "string", "maxLength": 200},
    },
}
TEXTS = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": 200},
        {
            "type": "array",
            "minItems": 1,
            "maxItems": 8,
            "items": {"type": "string", "minLength": 1},
        },
    ]
}


@dataclass(frozen=True)
class Drawn:
    label: str
    kind: str  # steered | positive | negative
    authenticated: bool  # the operation documents a credential
    case: Case[Any]


@dataclass
class Run:
    """What one identity's pass sent and what failed."""

    operations: set[str] = field(default_factory=set)
    sent: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    streamed: int = 0  # answers sent as server-sent events
    anonymous_successes: list[str] = field(default_factory=list)
    # distinct failure (operation, kind, status, what failed) -> the reports of its cases
    failures: dict[str, list[str]] = field(default_factory=dict)


def _settings(**extra: Any) -> dict[str, Any]:
    return {
        "admin_api_key": ADMIN,
        "jwt_secret_key": JWT_SECRET,
        # The throttle is its own test's subject; here it would turn most 401s into 429s.
        "auth_failures_per_minute": 100_000,
        **extra,
    }


def steer(document: dict[str, Any]) -> dict[str, Any]:
    """The document with generation steered at what exists — configured models,
    the stored key, plain text messages — so valid cases reach the provider and
    the database instead of stopping at a 404 or a 422. Only what is generated
    changes; responses are checked against the document as served."""
    document = json.loads(json.dumps(document))
    schemas = document["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    chat["model"] = {"enum": CHAT_MODELS}
    chat["messages"] = {"type": "array", "minItems": 1, "maxItems": 4, "items": TEXT_MESSAGE}
    embeddings = schemas["EmbeddingRequest"]["properties"]
    embeddings["model"] = {"enum": EMBED_MODELS}
    embeddings["input"] = TEXTS
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "model_id":
                    parameter["schema"] = {"enum": CHAT_MODELS}
                if parameter["name"] == "key_id":
                    parameter["schema"] = {"enum": [KEY_ID]}
    return document


def draw(operation: Any, mode: GenerationMode, count: int) -> list[Case[Any]]:
    """`count` cases for `operation`, the same ones every run."""
    cases: list[Case[Any]] = []

    @settings(
        max_examples=count,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(operation.as_strategy(generation_mode=mode))
    def collect(case: Case[Any]) -> None:
        cases.append(case)

    collect()
    return cases


def _takes_input(operation: Any) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("parameters") or definition.get("requestBody"))


def draw_all(document: dict[str, Any]) -> list[Drawn]:
    """Valid cases from the steered document for the operations steering changes
    (every other chat request streamed), then valid and invalid cases from the
    document as served."""
    config = schemathesis.Config()
    steered_document = steer(document)
    drawn: list[Drawn] = []
    for result in schemathesis.openapi.from_dict(
        steered_document, config=config
    ).get_all_operations():
        assert isinstance(result, Ok), result  # the document is valid (else: its error)
        operation = result.ok()
        if _definition(document, operation) == _definition(steered_document, operation) and (
            operation.label not in LLM_OPERATIONS  # steered in their body's components
        ):
            continue
        for index, case in enumerate(
            draw(operation, GenerationMode.POSITIVE, STEERED_EXAMPLES.get(operation.label, 4))
        ):
            if operation.label == "POST /api/v1/chat/completions" and index % 2:
                assert isinstance(case.body, dict)  # a valid chat body is an object
                case.body["stream"] = True
            drawn.append(_drawn(operation, "steered", case))
    for result in schemathesis.openapi.from_dict(document, config=config).get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        modes = [("positive", GenerationMode.POSITIVE)]
        if _takes_input(operation):
            modes.append(("negative", GenerationMode.NEGATIVE))
        for kind, mode in modes:
            drawn += [
                _drawn(operation, kind, case) for case in draw(operation, mode, EXAMPLES[kind])
            ]
    return drawn


def _definition(document: dict[str, Any], operation: Any) -> dict[str, Any]:
    definition: dict[str, Any] = document["paths"][operation.path][operation.method.lower()]
    return definition


def _drawn(operation: Any, kind: str, case: Case[Any]) -> Drawn:
    return Drawn(operation.label, kind, "security" in operation.definition.raw, case)


@pytest.fixture(scope="module")
def drawn() -> list[Drawn]:
    """The cases, drawn once for every identity: drawing costs more than sending."""
    return draw_all(create_app(make_settings(**_settings())).openapi())


def _request(case: Case[Any], credential: str | None, key_id: str) -> dict[str, Any]:
    """httpx arguments for `case`: schemathesis' serialisation, with the identity's
    credential instead of any generated one (a random one stays when there is none)."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    headers = dict(kwargs.get("headers") or {})
    if credential is not None:
        headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
        headers["Authorization"] = f"Bearer {credential}"
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"].replace(f"/{KEY_ID}", f"/{key_id}"),
        "params": kwargs.get("params") or None,
        # Generated header values may be any Latin-1 text; httpx encodes str as ASCII.
        "headers": [(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()],
    }
    if "json" in kwargs:
        request["content"] = json.dumps(kwargs["json"], allow_nan=False).encode()
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        request["content"] = data if isinstance(data, bytes) else str(data).encode()
    return request


def stream_problems(response: httpx.Response) -> Iterator[str]:
    """What is wrong with a server-sent-event answer: every `data:` is a chunk or
    an error body, and a stream that did not fail ends with `[DONE]`."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    if not data:
        yield "an event stream without events"
        return
    failed = False
    for item in data:
        if item == "[DONE]":
            continue
        try:
            event = STREAM_EVENT.validate_json(item)
        except ValidationError as exc:
            yield f"stream event does not match ChatCompletionChunk or ErrorResponse: {exc}"
            return
        failed = failed or isinstance(event, ErrorResponse)
    if not failed and data[-1] != "[DONE]":
        yield "a stream that did not fail must end with data: [DONE]"


def _check(case: Case[Any], response: httpx.Response, *, negative: bool) -> list[tuple[str, str]]:
    """(what failed, the report) for each problem with `response`."""
    checks = [*CHECKS, negative_data_rejection] if negative else CHECKS
    problems = [(problem[:60], problem) for problem in stream_problems(response)]
    try:
        case.validate_response(schemathesis.Response.from_any(response), checks=checks)
    except FailureGroup as exc:  # every check that failed, and the curl to reproduce it
        titles = ", ".join(sorted({failure.title for failure in exc.exceptions}))
        problems.append((titles, str(exc)))
    return problems


async def fuzz(
    client: httpx.AsyncClient, cases: list[Drawn], credential: str | None, key_id: str
) -> Run:
    run = Run()
    for item in cases:
        response = await client.request(**_request(item.case, credential, key_id))
        run.operations.add(item.label)
        run.sent += 1
        run.statuses[item.label, response.status_code] += 1
        run.streamed += response.headers.get("content-type", "").startswith("text/event-stream")
        if credential is None and item.authenticated and response.is_success:
            run.anonymous_successes.append(f"{item.label}: {response.status_code}")
        for what, report in _check(item.case, response, negative=item.kind == "negative"):
            key = f"{item.label} ({item.kind}) {response.status_code}: {what}"
            run.failures.setdefault(key, []).append(report)
    return run


def _report(run: Run) -> str:
    """Each distinct failure once, with how often it happened and its first case."""
    failed = sum(len(reports) for reports in run.failures.values())
    lines = [f"{failed} of {run.sent} cases failed, {len(run.failures)} distinct:"]
    lines += [f"  {len(reports)} x {key}" for key, reports in run.failures.items()]
    for key, reports in run.failures.items():
        lines += ["", f"== {key}", reports[0]]
    return "\n".join(lines)


async def _create_key(client: httpx.AsyncClient, tenant: str) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/keys",
        json={"name": f"fuzz {tenant}", "tenant": tenant},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()
    return key


@pytest.mark.parametrize("identity", ["admin", "tenant", "anonymous"])
async def test_every_operation_answers_as_documented(
    identity: str,
    drawn: list[Drawn],
    llm_app: LLMApp,
    migrated_postgres_url: str,
    redis_url: str,
) -> None:
    async with llm_app(**_settings(database_url=migrated_postgres_url, redis_url=redis_url)) as (
        app,
        client,
    ):
        tenant = await _create_key(client, "fuzz-tenant")
        victim = await _create_key(client, "fuzz-victim")  # the keys routes' path target
        credential = {"admin": ADMIN, "tenant": tenant["key"], "anonymous": None}[identity]
        run = await fuzz(client, drawn, credential, victim["id"])

    assert set(LLM_OPERATIONS) | set(KEY_OPERATIONS) <= run.operations
    assert run.sent > 10 * len(run.operations)
    assert not run.failures, _report(run)
    # The cases reached what they are for, so a pass means something:
    if identity == "anonymous":  # no credential (or a random one) is never anyone
        assert not run.anonymous_successes
        assert run.statuses["POST /api/v1/chat/completions", 401] > 0
    else:
        for label in LLM_OPERATIONS:
            assert run.statuses[label, 200] > 0, label
        assert run.streamed > 0
    if identity == "admin":
        for label in KEY_OPERATIONS:
            assert run.statuses[label, 201 if label.startswith("POST") else 200] > 0, label
    if identity == "tenant":
        assert run.statuses["GET /api/v1/keys", 403] > 0


async def test_the_document_describes_every_route(llm_app: LLMApp) -> None:
    """Each operation documents a success body with a real schema and the one
    error body for every error status, FastAPI's 422 included; nothing refers
    to FastAPI's HTTPValidationError, which Skygate never sends."""
    async with llm_app(**_settings()) as (app, client):
        served = (await client.get("/openapi.json")).json()
    assert served == app.openapi()
    assert "HTTPValidationError" not in json.dumps(served)
    for path, item in served["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            success = [code for code in responses if code.startswith("2")]
            assert success, where
            for code in success:
                content = responses[code]["content"]
                if set(content) == {"text/event-stream"}:  # only events (a job's stream)
                    event = content["text/event-stream"]["schema"]
                    assert event["properties"]["data"]["description"], where
                    continue
                schema = content["application/json"]["schema"]
                assert schema.get("$ref"), f"{where} {code}: no documented body"
            for code in ("400", "413", "500"):
                assert code in responses, f"{where}: {code} undocumented"
            for code, response in responses.items():
                probe_state = code == "503" and path in ("/ready", "/health")  # own body
                if code.startswith(("4", "5")) and not probe_state:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, where
    chat = served["paths"]["/api/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    for code in ("401", "403", "404", "422", "429", "502", "503", "504"):
        assert code in chat["responses"], code
