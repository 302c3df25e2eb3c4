"""The maintenance jobs and the schedules' submission path, on PostgreSQL (the
web serving its own queue: JOBS_IN_PROCESS), and the hard-limit watchdog."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text

from core.jobs.schedules import SCHEDULES, Schedule, submit_tick
from database.models import ApiKey, UsageRecord
from tests.support.app import make_settings, running_app, services
from tests.support.auth import ADMIN, bearer, create_key
from tests.support.jobs import finished
from worker.watchdog import EXIT_HARD_LIMIT, Watchdog

USAGE = (
    "created_at",
    "request_id",
    "tenant",
    "model_group",
    "cache_status",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "latency_ms",
    "estimated",
)


async def test_maintenance_jobs_purge_and_expire_keys(migrated_postgres_url: str) -> None:
    settings = make_settings(
        database_url=migrated_postgres_url,
        admin_api_key=ADMIN,
        jobs_in_process=True,
        usage_retention_days=30,
    )
    async with running_app(settings) as (app, client):
        live = services(app)
        now = datetime.now(UTC)
        old, recent = now - timedelta(days=31), now - timedelta(days=1)
        await live.usage.repository.insert(
            USAGE,
            [
                (old, "r1", "t", "m", "miss", "ok", 1, 1, 0.0, 1.0, False),
                (recent, "r2", "t", "m", "miss", "ok", 1, 1, 0.0, 1.0, False),
            ],
        )
        expired = await create_key(client, tenant="team-a", expires_at=old.isoformat())
        current = await create_key(
            client, tenant="team-a", expires_at=(now + timedelta(days=1)).isoformat()
        )
        async with live.sessions() as session, session.begin():
            await session.execute(
                text(
                    "INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint)"
                    " VALUES (now() - interval '8 days', 1, 'successful', 0, 'x')"
                )
            )

        expire = Schedule("maintenance.expire_keys", "0 * * * *")
        tick_at = datetime(2030, 1, 1, 5, 0, tzinfo=UTC)
        job_id = await submit_tick(live.jobs.service, expire, tick_at)
        assert job_id is not None
        done = await finished(client, job_id, headers=bearer(ADMIN))
        assert done["status"] == "success" and done["result"] == {"expired_keys": 1}
        async with live.sessions() as session:
            states = dict((await session.execute(select(ApiKey.id, ApiKey.state))).all())
        assert states == {expired["id"]: "expired", current["id"]: "active"}
        refused = await client.get("/api/v1/models", headers=bearer(expired["key"]))
        assert refused.status_code == 401

        purge = next(s for s in SCHEDULES if s.type == "maintenance.purge")
        job_id = await submit_tick(live.jobs.service, purge, tick_at)
        assert job_id is not None
        done = await finished(client, job_id, headers=bearer(ADMIN))
        assert done["status"] == "success", done
        assert done["result"]["queue_log_rows"] >= 1
        async with live.sessions() as session:
            left = (
                await session.execute(
                    text(
                        "SELECT count(*) FROM pgqueuer_log"
                        " WHERE created < now() - interval '7 days'"
                    )
                )
            ).scalar_one()
            usage_left = (
                await session.execute(select(func.count()).select_from(UsageRecord))
            ).scalar_one()
        assert left == 0
        assert done["result"]["usage_rows"] == 1 and usage_left == 1  # the recent row stays
        listed = await client.get("/api/v1/jobs?type=maintenance.purge", headers=bearer(ADMIN))
        assert [job["id"] for job in listed.json()["data"]] == [job_id]


def test_watchdog_ends_the_process_past_the_hard_limit() -> None:
    exits: list[int] = []
    running = {"ok": (time.monotonic(), 60.0), "stuck": (time.monotonic() - 5, 1.0)}
    dog = Watchdog(running, every=0.01, exit=exits.append)
    assert dog.overdue(time.monotonic()) == ("stuck", 1.0)
    dog.start()
    dog.join(5)
    assert exits == [EXIT_HARD_LIMIT]
    assert Watchdog({"ok": (time.monotonic(), 60.0)}).overdue(time.monotonic()) is None
