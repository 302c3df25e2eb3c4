"""Test support code, the only place test modules import helpers from: real Redis and
PostgreSQL servers and their fixtures (servers, fixtures), the fake upstream's fixtures
(llm), in-process apps and their waits (app), credentials (auth), request bodies
(requests), extra routes (routes), gateway processes (gateway), the agents tests'
helpers (agents) and the tool tests' HTTP server (echo_server)."""
