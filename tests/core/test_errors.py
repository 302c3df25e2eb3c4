"""Every error a client can meet has OpenAI's shape plus the request id, and no
internal detail ever leaks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.types import Message

from tests.support.app import AppFactory
from tests.support.routes import add_test_routes


def assert_error_shape(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return body["error"]  # type: ignore[no-any-return]


async def test_each_status_uses_the_one_error_shape(app_factory: AppFactory) -> None:
    async with app_factory(customize=add_test_routes, max_request_body_bytes=2048) as (_, client):
        err = assert_error_shape(await client.get("/no/such/path"), 404)
        assert err["code"] == "not_found" and err["type"] == "invalid_request_error"

        err = assert_error_shape(await client.delete("/live"), 405)
        assert err["code"] == "method_not_allowed"

        err = assert_error_shape(
            await client.post(
                "/test/echo", content=b"x" * 4096, headers={"content-type": "application/json"}
            ),
            413,
        )
        assert err["code"] == "request_too_large"

        err = assert_error_shape(await client.post("/test/echo", json={"text": 5, "n": 99}), 422)
        assert err["param"] in {"text", "n"}
        assert err["type"] == "invalid_request_error"

        response = await client.get("/test/limited")
        err = assert_error_shape(response, 429)
        assert err["type"] == "rate_limit_error"
        assert response.headers["retry-after"] == "7"

        response = await client.get("/test/boom")
        err = assert_error_shape(response, 500)
        assert err["type"] == "api_error"
        assert "hunter2" not in response.text and "core.py" not in response.text


@pytest.mark.parametrize(
    "body",
    [b'{"text": "unterminated', b"not json at all", b'{"text": "\xff\xfe"}', b"[1, 2"],
    ids=["truncated", "garbage", "invalid-utf8", "bad-array"],
)
async def test_malformed_json_is_a_400_not_a_500(app_factory: AppFactory, body: bytes) -> None:
    async with app_factory(customize=add_test_routes) as (_, client):
        response = await client.post(
            "/test/echo", content=body, headers={"content-type": "application/json"}
        )
        err = assert_error_shape(response, 400)
        assert err["type"] == "invalid_request_error"


async def test_wrong_json_types_name_the_field(app_factory: AppFactory) -> None:
    async with app_factory(customize=add_test_routes) as (_, client):
        err = assert_error_shape(await client.post("/test/echo", json={"n": 2}), 422)
        assert err["param"] == "text"
        assert "text" in err["message"]
        err = assert_error_shape(await client.post("/test/echo", json=["text"]), 422)


async def test_client_leaving_before_its_body_arrives_is_not_a_server_error(
    app_factory: AppFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    async with app_factory(customize=add_test_routes) as (app, _):
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        path = "/api/v1/chat/completions"
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("t", 80),
            "scheme": "http",
            "http_version": "1.1",
            "root_path": "",
            "asgi": {"version": "3.0"},
            "state": {"services": app.state.services},
        }
        await app(scope, receive, send)
    assert sent[0]["status"] == 499
    assert "unhandled_exception" not in capfd.readouterr().err
