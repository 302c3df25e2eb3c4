"""The hard time limit: a thread that ends the worker process when a job runs
past its type's hard limit.

The soft limit is the runner's (a cancellation inside the event loop); a handler
stuck in blocking code never yields to it, so only something outside the loop
can act. The process exits non-zero (the platform restarts it), and the job,
left `in_progress`, is re-picked after pgqueuer's heartbeat timeout: a counted
start, so a job that always hangs ends `failed` with `worker_lost`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger("skygate.worker")

EXIT_HARD_LIMIT = 70  # EX_SOFTWARE: not a clean stop


class Watchdog(threading.Thread):
    def __init__(
        self,
        running: dict[str, tuple[float, float]],  # JobRunner.running: id -> (start, hard)
        *,
        every: float = 1.0,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        super().__init__(name="job-watchdog", daemon=True)
        self.running = running
        self.every = every
        self.exit = exit
        self.stopped = threading.Event()

    def overdue(self, now: float) -> tuple[str, float] | None:
        try:
            entries = list(self.running.items())
        except RuntimeError:  # changed size while copied (the loop's thread): next look
            return None
        for job_id, (started, hard) in entries:
            if now - started > hard:
                return job_id, hard
        return None

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            found = self.overdue(time.monotonic())
            if found is not None:
                job_id, hard = found
                log.critical(
                    "job_hard_limit_exit",
                    job_id=job_id,
                    hard_limit_seconds=hard,
                    exit_code=EXIT_HARD_LIMIT,
                )
                sys.stdout.flush()
                sys.stderr.flush()
                self.exit(EXIT_HARD_LIMIT)
                return

    def stop(self) -> None:
        self.stopped.set()
