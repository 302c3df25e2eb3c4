"""A `chat.batch` whose worker is SIGKILLed mid-batch: another worker process
finishes it once, every request answered, and no request that was answered
before the crash is sent upstream again (the fake upstream counts the calls)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bench.fake_upstream import FakeUpstream
from tests.support.app import make_settings, running_app, services
from tests.support.auth import ADMIN, bearer, create_key
from tests.support.jobs import finished
from tests.support.llm import router_yaml
from tests.worker.fleet import Worker, fast_settings, until

REQUESTS = 10


def _answered(progress: dict[str, object] | None) -> int:
    step = (progress or {}).get("current_step", 0)
    return step if isinstance(step, int) else 0


async def test_a_batch_killed_mid_way_resumes_on_another_worker_without_resending(
    migrated_postgres_url: str,
    redis_url: str,
    upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "fake-anthropic-key")  # router_yaml's claude group
    router = tmp_path / "router.yaml"
    router.write_text(router_yaml(upstream, timeout=10))
    upstream.set_behaviour("primary-1", "slow", delay_ms=200)  # the kill lands mid-batch
    env = {
        "DATABASE_URL": migrated_postgres_url,
        "REDIS_URL": redis_url,
        "ROUTER_CONFIG": str(router),
        "ENABLE_CACHE": "false",
        "FAKE_ANTHROPIC_KEY": "fake-anthropic-key",
    }
    first, second = Worker("first", tmp_path, env), Worker("second", tmp_path, env)
    settings = make_settings(
        database_url=migrated_postgres_url,
        redis_url=redis_url,
        admin_api_key=ADMIN,
        router_config=str(router),
        enable_cache=False,
        **fast_settings(),
    )
    try:
        async with running_app(settings) as (app, client):
            await first.start().started()
            key = (await create_key(client, tenant="team-a"))["key"]
            batch = {
                "requests": [
                    {"model": "primary", "messages": [{"role": "user", "content": f"q{i}"}]}
                    for i in range(REQUESTS)
                ],
                "concurrency": 1,  # one in flight: at most one request is sent twice
            }
            accepted = await client.post(
                "/api/v1/jobs", json={"type": "chat.batch", "input": batch}, headers=bearer(key)
            )
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["id"]
            repository = services(app).jobs.service.repository

            async def answered_three() -> bool:
                row = await repository.get(job_id)
                return row is not None and _answered(row.progress) >= 3

            await until(answered_three, 60, what="three answers checkpointed")
            first.signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 10)
            before = await repository.get(job_id)
            assert before is not None and before.status == "in_progress"
            answered_before = _answered(before.progress)

            await second.start().started()
            job = await finished(client, job_id, headers=bearer(key))
    finally:
        first.stop()
        second.stop()
    assert job["status"] == "success" and job["attempts"] == 2, job
    results = job["result"]["data"]
    assert [r["index"] for r in results] == list(range(REQUESTS))
    assert all(r["status"] == "success" for r in results), results
    # Each request reached the upstream once, except at most the one in flight when
    # the first worker died; re-sending the answered ones would add `answered_before`.
    assert REQUESTS <= upstream.calls("primary-1") <= REQUESTS + 1
    assert answered_before >= 3
