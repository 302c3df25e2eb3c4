"""Persistence behind small classes: every SQL statement Skygate runs lives here.

Each repository holds the session factory and opens its own short sessions, so a
caller (core services) never sees a session, a query or an ORM class it would
have to build. Rows come back as the ORM objects, detached (`expire_on_commit`
is off), read-only by convention; changes go through the repository's methods.
"""
