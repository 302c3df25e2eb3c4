"""The usage writer against real databases: what it writes (COPY on PostgreSQL,
INSERT on SQLite) and how often it writes under steady traffic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from core.gateway.usage import UsageEvent, UsageRecorder
from database.engine import EngineOptions, create_engine, session_factory
from database.models import UsageRecord
from database.repositories.usage import UsageRepository
from tests.support.servers import PostgresServer


def event(i: int, *, cost: float = 0.000123456, tenant: str = "acme") -> UsageEvent:
    return UsageEvent(
        request_id=f"req-{i}",
        tenant=tenant,
        api_key_id="key-1",
        model_group="gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini-2024-07-18",
        prompt_tokens=10 + i,
        completion_tokens=20,
        cost_usd=cost,
        latency_ms=12.345,
        cache_status="miss" if i % 2 else "hit",
        outcome="success",
        estimated=i == 1,  # e.g. a stream the client cut: tokens estimated by the gateway
    )


class CountingRepository(UsageRepository):
    """Counts the statements (batches) the writer sends."""

    writes = 0

    async def insert(self, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
        self.writes += 1
        await super().insert(columns, rows)


async def test_postgres_gets_every_field_by_copy(migrated_postgres_url: str) -> None:
    await check_every_field_is_written(migrated_postgres_url, copy=True)


async def test_sqlite_gets_every_field_by_insert(sqlite_url: str) -> None:
    await check_every_field_is_written(sqlite_url, copy=False)


async def check_every_field_is_written(url: str, *, copy: bool) -> None:
    engine = create_engine(EngineOptions(url=url))
    sessions = session_factory(engine)
    recorder = UsageRecorder(UsageRepository(sessions), flush_seconds=60)
    try:
        assert recorder.repository.copy is copy
        for i in range(3):
            recorder.record(event(i))
        recorder.record(event(3, cost=0.0, tenant="other"))
        await recorder.flush()
        async with sessions() as session:
            query = select(UsageRecord).order_by(UsageRecord.id)
            rows = list((await session.execute(query)).scalars())
        summary = await recorder.summary(tenant="acme", since=date.today(), until=date.today())
        assert [r.request_id for r in rows] == ["req-0", "req-1", "req-2", "req-3"]
        first = rows[0]
        assert (first.tenant, first.api_key_id, first.provider) == ("acme", "key-1", "openai")
        assert (first.prompt_tokens, first.completion_tokens) == (10, 20)
        assert Decimal(str(first.cost_usd)) == Decimal("0.000123456")
        assert Decimal(str(first.latency_ms)) == Decimal("12.345")
        assert (first.cache_status, first.outcome) == ("hit", "success")
        assert [r.estimated for r in rows] == [False, True, False, False]
        assert first.created_at is not None
        assert summary[0]["requests"] == 3
        assert summary[0]["prompt_tokens"] == 33
        assert summary[0]["cache_hits"] == 2
        assert summary[0]["estimated"] == 1
        assert summary[0]["cost_usd"] == pytest.approx(3 * 0.000123456)
    finally:
        await recorder.close()
        await engine.dispose()


async def test_steady_traffic_is_written_in_few_large_batches(migrated_postgres_url: str) -> None:
    """Rows arriving while a batch is being written wait for the next flush, so a
    busy gateway sends one statement per flush interval, not one per handful of
    requests."""
    engine = create_engine(EngineOptions(url=migrated_postgres_url))
    sessions = session_factory(engine)
    rows = CountingRepository(sessions)
    recorder = UsageRecorder(rows, flush_seconds=0.1)
    recorder.start()
    try:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 1.0:  # ~10 flush intervals of traffic
            for _ in range(5):
                recorder.record(event(sent))
                sent += 1
            await asyncio.sleep(0.001)
        await recorder.close()
        async with sessions() as session:
            written = len((await session.execute(select(UsageRecord.id))).all())
        assert written == sent
        assert rows.writes <= 20, f"{rows.writes} statements for {sent} rows"
    finally:
        await engine.dispose()


async def test_rows_recorded_while_postgres_is_down_are_written_when_it_returns(
    migrated_postgres_url: str, postgres_server: PostgresServer
) -> None:
    engine = create_engine(EngineOptions(url=migrated_postgres_url))
    sessions = session_factory(engine)
    recorder = UsageRecorder(UsageRepository(sessions), flush_seconds=60)
    try:
        recorder.record(event(0))
        await recorder.flush()
        postgres_server.stop()
        try:
            for i in range(1, 6):
                recorder.record(event(i))
            await recorder.flush()  # fails: the batch is kept, nothing raised
            assert len(recorder.queue) == 5 and recorder.failing
        finally:
            postgres_server.start()
        await engine.dispose()  # connections to the stopped server are gone
        await recorder.flush()
        assert recorder.queue == [] and not recorder.failing
        async with sessions() as session:
            ids = (await session.execute(select(UsageRecord.request_id))).scalars().all()
        assert sorted(ids) == [f"req-{i}" for i in range(6)], "no row lost, none twice"
    finally:
        await engine.dispose()
