"""Test support code: private Redis and PostgreSQL servers and their pytest fixtures."""
