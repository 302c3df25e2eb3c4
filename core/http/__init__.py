"""ASGI middleware for HTTP and WebSocket scopes, forwarded-address policy, bounded JSON bodies."""
