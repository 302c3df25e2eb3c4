"""Skygate's command line: `python -m skygate` (or `skygate`, where the project is
installed). An operator's tools beside the servers, working on the same settings
and the same code paths as they do:

- `keys create | list | revoke | rotate`: API keys, written straight to the
  database through the admin API's own key service (`core.auth.keys`), so the first
  key of a new deployment needs no admin key and no running server;
- `check-config`: the environment, ROUTER_CONFIG and AGENTS_CONFIG validated offline
  by the checks start-up runs, with start-up's messages and an exit code for CI;
- `migrate`: `alembic upgrade head` on DATABASE_URL (what `make migrate` does).

The package sits at the top of the import layers beside `api` and `worker`: it may
use everything below, and nothing imports it.
"""
