"""Finding 5: hostile JSON stalled a worker.

The depth check walked every element once a body held more than 64 brackets:
10 MiB of `[]` took 8.5 s, during which that worker answered nothing, and two
such requests stalled both workers. Now a pre-scan of C-speed passes refuses
such bodies before orjson builds anything (core/http/json_body.py). Shown against
real gunicorn (two workers, 16 MiB body limit): hostile 8 MiB bodies of several
shapes sent to both workers at once are each answered 400 while `/live`, timed
from other connections, keeps answering.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import httpx
import pytest

from core.errors import InvalidJSONError
from core.http.json_body import MAX_CONTAINERS, MAX_DEPTH, MAX_VALUES, parse_json_object
from tests.support.gateway import GatewayProcess, sqlite_gateway

MIB = 1024 * 1024
SIZE = 8 * MIB
HEAD = b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}], "metadata": '
STRING_HEAD = b'{"model": "demo", "messages": [{"role": "user", "content": "'


def fill(prefix: bytes, unit: bytes, suffix: bytes, size: int = SIZE) -> bytes:
    return prefix + unit * ((size - len(prefix) - len(suffix)) // len(unit)) + suffix


@cache
def hostile(shape: str) -> bytes:
    """8 MiB bodies, each refused for a different reason or at a different step."""
    half = SIZE // 2 - len(HEAD)
    bodies = {
        "broad-lists": lambda: fill(HEAD + b"[", b"[],", b"[]]}"),
        "deep-unclosed": lambda: fill(HEAD, b"[", b""),
        "deep-balanced": lambda: HEAD + b"[" * half + b"]" * half + b"}",
        "many-objects": lambda: fill(HEAD + b"[", b'{"a":1},', b"{}]}"),
        "open-braces": lambda: fill(b"", b"{", b""),
        "numbers": lambda: fill(HEAD + b"[", b"1,", b"1]}"),
        "short-strings": lambda: fill(HEAD + b"[", b'"a",', b'"a"]}'),
        "nulls": lambda: fill(HEAD + b"[", b"null,", b"null]}"),
        # escaped quotes and backslashes first, to throw a string-aware count off
        "escapes-then-broad": lambda: fill(HEAD + b'["a\\\\\\"b\\\\", ', b"[],", b"[]]}"),
        "lone-surrogates": lambda: fill(STRING_HEAD, b"\\ud800", b'"}]}'),
        "broad-inside-deep": lambda: fill(HEAD + b"[" * 60, b"[],", b"[]" + b"]" * 60 + b"}"),
    }
    return bodies[shape]()


SHAPES = [
    "broad-lists",
    "deep-unclosed",
    "deep-balanced",
    "many-objects",
    "open-braces",
    "numbers",
    "short-strings",
    "nulls",
    "escapes-then-broad",
    "lone-surrogates",
    "broad-inside-deep",
]


# --------------------------------------------------------------------------- the parser alone


@pytest.mark.parametrize("shape", SHAPES)
def test_each_hostile_shape_is_refused_in_milliseconds(shape: str) -> None:
    raw = hostile(shape)
    started = time.perf_counter()
    with pytest.raises(InvalidJSONError):
        parse_json_object(raw)
    elapsed = time.perf_counter() - started
    # ~10-60 ms on the 2-core CI machine; the bound is generous for a loaded one
    assert elapsed < 0.5, f"{shape}: {elapsed * 1000:.0f} ms"


def legit_bodies() -> dict[str, bytes]:
    image = {"url": "data:image/png;base64," + base64.b64encode(os.urandom(12 * MIB)).decode()}
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(12):
        schema = {
            "type": "object",
            "properties": {"next": schema, **{f"p{j}": {"enum": [1, 2, 3]} for j in range(5)}},
        }
    code = 'def f(x):\n    return {"a": [x[i] for i in range(10)]}  # [b] {c}\n' * 60_000
    shapes: dict[str, Any] = {
        "16-MiB-base64-image": {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": image},
                    ],
                }
            ],
        },
        "2048-token-arrays-300k-tokens": {
            "model": "e",
            "input": [[17] * 146 for _ in range(2048)],
        },
        "10000-messages-with-parts": {
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": f"message {i}"}]}
                for i in range(10_000)
            ],
        },
        "128-tools-nested-schemas": {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [
                {"type": "function", "function": {"name": f"t{i}", "parameters": schema}}
                for i in range(128)
            ],
        },
        "code-with-brackets-in-strings": {
            "model": "m",
            "messages": [
                {"role": "user", "content": code[i : i + 4000]} for i in range(0, len(code), 4000)
            ],
        },
        "64-levels": {"model": "m", "messages": [], "metadata": json.loads("[" * 63 + "]" * 63)},
    }
    return {name: json.dumps(body).encode() for name, body in shapes.items()}


def test_the_largest_legitimate_bodies_pass() -> None:
    for name, raw in legit_bodies().items():
        started = time.perf_counter()
        assert isinstance(parse_json_object(raw), dict), name
        assert time.perf_counter() - started < 1.0, name


def test_the_caps_are_exact_at_their_edges() -> None:
    deep = b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert parse_json_object(deep)
    with pytest.raises(InvalidJSONError, match="nests deeper"):
        parse_json_object(b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}")
    # brackets inside strings (escaped quotes included) are not structure
    text = json.dumps({"a": '"[' * (MAX_DEPTH + 5) + "\\" + "{" * MAX_CONTAINERS})
    assert parse_json_object(text.encode())
    values = b'{"a": [' + b"0," * (MAX_VALUES - 2) + b"0]}"
    assert parse_json_object(values)
    with pytest.raises(InvalidJSONError, match="JSON values"):
        parse_json_object(b'{"a": [' + b"0," * MAX_VALUES + b"0]}")
    with pytest.raises(InvalidJSONError, match="arrays and objects"):
        parse_json_object(b'{"a": [' + b"[]," * MAX_CONTAINERS + b"[]]}")


# --------------------------------------------------------------------------- real gunicorn


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with sqlite_gateway(
        tmp_path_factory.mktemp("hostile-bodies"), MAX_REQUEST_BODY_BYTES=str(16 * MIB)
    ) as process:
        yield process


@pytest.mark.slow
def test_hostile_bodies_on_both_workers_leave_live_answering(gateway: GatewayProcess) -> None:
    bodies = [hostile(shape) for shape in SHAPES]
    done = threading.Event()
    live: list[float] = []

    def poll_live() -> None:
        # a new connection each time, so the probe lands on either worker
        while not done.is_set():
            started = time.monotonic()
            response = httpx.get(f"{gateway.base_url}/live", timeout=30)
            live.append(time.monotonic() - started)
            assert response.status_code == 200
            time.sleep(0.02)

    def attack(offset: int) -> list[tuple[str, int, Any]]:
        answers = []
        with httpx.Client(base_url=gateway.base_url, timeout=60) as client:
            for i in range(len(bodies)):
                shape = SHAPES[(i + offset) % len(SHAPES)]
                response = client.post(
                    "/api/v1/chat/completions",
                    content=bodies[(i + offset) % len(bodies)],
                    headers={"Content-Type": "application/json", "Connection": "close"},
                )
                answers.append((shape, response.status_code, response.json()))
        return answers

    with ThreadPoolExecutor(3) as pool:
        prober = pool.submit(poll_live)
        time.sleep(0.2)
        attackers = [pool.submit(attack, offset) for offset in (0, len(SHAPES) // 2)]
        answers = [answer for attacker in attackers for answer in attacker.result()]
        done.set()
        prober.result()
    for shape, status, body in answers:
        assert status == 400, (shape, status, body)
        assert body["error"]["code"] == "invalid_json" and body["error"]["type"], shape
    assert len(live) >= 10, live
    assert max(live) < 1.0, f"/live took up to {max(live):.2f} s ({len(live)} probes)"
