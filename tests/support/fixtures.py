"""Pytest plugin: real Redis and PostgreSQL servers for the test session.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.support.fixtures"]``.

Session fixtures ``redis_server`` / ``postgres_server`` start one private server each
per session (per xdist worker). Function fixtures ``redis_url`` / ``postgres_url``
hand each test a clean state: they repair whatever a previous test did to the
server (stopped or frozen it), then give an empty Redis or a fresh database.
All fixtures are synchronous so they serve sync and async tests alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.servers import PostgresServer, RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A started private redis-server, closed at the end of the session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A started private PostgreSQL cluster, closed at the end of the session."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session Redis, running, thawed and emptied (FLUSHALL) for this test."""
    redis_server.ensure_running()
    redis_server.flushall()
    return redis_server.url


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh database for this test; dropped (WITH FORCE) afterwards."""
    postgres_server.ensure_running()
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.ensure_running()
        postgres_server.drop_database(name)
