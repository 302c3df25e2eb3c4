"""Persistence: the engine and sessions, ORM models, queries, Alembic migrations.

The lowest layer: it imports nothing from `core`, `agents` or `api`.
"""
