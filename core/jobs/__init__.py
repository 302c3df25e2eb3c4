"""Background jobs: types registered in code, a queue port (pgqueuer on PostgreSQL,
in-process for the embedded default), the runner that gives every job the same
life (attempts, limits, retries, cancellation, progress), and the service the
API calls. The API's state lives in the `jobs` table (database.repositories.jobs);
the queue only carries a job's id to a worker."""
