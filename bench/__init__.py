"""Benchmark tooling for Skygate: load drivers and the fake LLM upstream."""
