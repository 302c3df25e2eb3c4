"""Logging (one processor chain), Prometheus metrics and Sentry."""
