"""HTTP routers only. Nothing imports `api`; it imports `agents`, `core`, `database`."""
