"""`python -m worker`: the background job worker, its own process and Render service.

It builds the same layers as a web process (core.container), minus the web edge:
infrastructure, the gateway (jobs call models exactly as the API does) and the
jobs, then serves pgqueuer's queue with the job runner, beats its heartbeat
(core.jobs.heartbeat), and runs the schedules (core.jobs.schedules) until
SIGTERM or SIGINT. See `worker.process` for the drain and `worker.watchdog`
for the hard time limit. PostgreSQL only: on SQLite jobs run in the web
process, and the worker refuses to start.
"""
