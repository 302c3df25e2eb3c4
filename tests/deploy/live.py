"""A live Skygate fleet and a real Prometheus scraping it, for the tests of what
`deploy/` ships: gunicorn (2 workers) on PostgreSQL and Redis, routed to a fake
provider, a `python -m worker` beating and running jobs, and `prometheus` scraping
both (with the metrics token) every second. `drive_traffic` makes the series the
dashboard and the alerts read exist: answers, errors, a stream, a cache hit, a 429,
a budgeted tenant, a job."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.fake_upstream import FakeUpstream, run_in_thread
from database.schema import upgrade_head
from tests.support.auth import ADMIN, SECRET, bearer
from tests.support.gateway import GatewayProcess
from tests.support.llm import router_yaml
from tests.support.requests import CHAT, chat
from tests.support.servers import PostgresServer, RedisServer, free_port, stop_group
from tests.worker.fleet import FAST, Worker

METRICS_TOKEN = "metrics-token-for-deploy-tests-0123456789"
PROMETHEUS = "prometheus"
SCRAPE_SECONDS = 1


@dataclass(slots=True)
class Fleet:
    gateway: GatewayProcess
    worker: Worker
    upstream: FakeUpstream
    prometheus: Prometheus


class Prometheus:
    """`prometheus` on a free loopback port with its own config and storage."""

    def __init__(self, root: Path, targets: dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.log_path = root / "prometheus.log"
        jobs = "".join(
            textwrap.dedent(f"""\
              - job_name: {job}
                authorization: {{credentials: {METRICS_TOKEN}}}
                static_configs: [{{targets: ["{target}"]}}]
            """)
            for job, target in targets.items()
        )
        self.config = root / "prometheus.yml"
        self.config.write_text(
            f"global: {{scrape_interval: {SCRAPE_SECONDS}s, scrape_timeout: {SCRAPE_SECONDS}s}}\n"
            "scrape_configs:\n" + textwrap.indent(jobs, "  ")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.root / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus did not start:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> Any:
        return self.api("query", query=expr)

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def scraped_since(self, since: float, targets: int) -> bool:
        """All `targets` are up and were last scraped after `since` (time.time())."""
        found = self.query("timestamp(up == 1)")["result"]
        return len(found) == targets and all(float(r["value"][1]) > since for r in found)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)


def _wait(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def drive_traffic(fleet: Fleet) -> None:
    """A little of everything an operator's panels show."""
    base = fleet.gateway.base_url
    upstream = fleet.upstream
    upstream.set_behaviour("solo-1", "status", status=500)  # a provider failing
    with httpx.Client(base_url=base, timeout=20) as client:
        created = client.post(
            "/api/v1/keys",
            json={"name": "deploy", "tenant": "team-a", "monthly_budget_usd": 5, "rpm_limit": 30},
            headers=bearer(ADMIN),
        )
        assert created.status_code == 201, created.text
        key = bearer(created.json()["key"])
        for text in ("hello", "hello", "again"):  # the second is a cache hit
            answered = client.post(CHAT, json=chat(text), headers=key)
            assert answered.status_code == 200, answered.text
        upstream.set_behaviour("primary-1", "status", status=503)  # primary -> backup
        fell_back = client.post(CHAT, json=chat("fall back"), headers=key)
        assert fell_back.headers.get("x-skygate-model") == "backup-1", fell_back.text
        upstream.set_behaviour("primary-1", "ok")
        streamed = client.post(CHAT, json=chat("stream me", stream=True), headers=key)
        assert streamed.status_code == 200 and b"[DONE]" in streamed.content
        failed = client.post(CHAT, json=chat("fail", model="solo"), headers=key)
        assert failed.status_code == 502, failed.text
        unknown = client.post(CHAT, json=chat("who", model="no-such-model"), headers=key)
        assert unknown.status_code == 404
        limited_key = client.post(
            "/api/v1/keys",
            json={"name": "limited", "tenant": "team-b", "rpm_limit": 1},
            headers=bearer(ADMIN),
        ).json()["key"]
        statuses = [
            client.post(CHAT, json=chat(f"limit {i}"), headers=bearer(limited_key)).status_code
            for i in range(2)
        ]
        assert statuses == [200, 429], statuses
        job = client.post(
            "/api/v1/jobs",
            json={"type": "test.steps", "input": {"log": "/dev/null", "label": "deploy"}},
            headers=key,
        )
        assert job.status_code == 202, job.text
        location = job.headers["location"]

        def job_done() -> bool:
            state = client.get(location, headers=key).json()["status"]
            return bool(state == "success")

        _wait(job_done, 30, "the job to run on the worker")
    upstream.set_behaviour("solo-1", "ok")


@contextmanager
def live_fleet(root: Path, postgres: PostgresServer, redis: RedisServer) -> Iterator[Fleet]:
    postgres.ensure_running()
    redis.ensure_running()
    database = postgres.create_database(f"deploy_{uuid.uuid4().hex[:12]}")
    upgrade_head(database)
    upstream, stop_upstream = run_in_thread()
    router = root / "router.yaml"
    router.write_text(router_yaml(upstream))
    worker_port = free_port()
    common = {
        "DATABASE_URL": database,
        "REDIS_URL": redis.url,
        "FAKE_ANTHROPIC_KEY": "fake-anthropic-key",
        **FAST,
    }
    gateway = GatewayProcess(
        {
            **common,
            "ROUTER_CONFIG": str(router),
            "ADMIN_API_KEY": ADMIN,
            "JWT_SECRET_KEY": SECRET,
            "METRICS_TOKEN": METRICS_TOKEN,
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(root / "prom"),
            "USAGE_FLUSH_SECONDS": "0.2",
        },
        root / "gunicorn.log",
    )
    worker = Worker(
        "deploy-w1",
        root,
        {**common, "WORKER_METRICS_PORT": str(worker_port), "HOST": "127.0.0.1"},
    )
    prometheus = Prometheus(
        root,
        {
            "skygate": f"127.0.0.1:{gateway.port}",
            "skygate-worker": f"127.0.0.1:{worker_port}",
        },
    )
    try:
        gateway.start()
        asyncio.run(worker.start().started())
        prometheus.start()
        fleet = Fleet(gateway, worker, upstream, prometheus)
        drive_traffic(fleet)
        # Two scrapes after the traffic: a series the traffic created has two samples,
        # which `rate()` needs (one scrape gave it one, and the panel no data).
        for _ in range(2):
            since = time.time() + 0.5  # what the traffic left (and the monitor's next look)
            _wait(partial(prometheus.scraped_since, since, 2), 30, "a scrape after the traffic")
        yield fleet
    finally:
        prometheus.stop()
        worker.stop()
        gateway.stop()
        stop_upstream()
        postgres.ensure_running()
        postgres.drop_database(database.rsplit("/", 1)[-1])
