"""One live fleet and Prometheus for the dashboard and alert-rule tests (`live.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.live import Fleet, live_fleet
from tests.support.servers import PostgresServer, RedisServer


@pytest.fixture(scope="package")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
) -> Iterator[Fleet]:
    with live_fleet(tmp_path_factory.mktemp("deploy"), postgres_server, redis_server) as live:
        yield live
