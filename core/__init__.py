"""Cross-cutting machinery: config, services, logging, middleware, errors, metrics.

No HTTP routes live here; `core` never imports `api` or `agents`.
"""
