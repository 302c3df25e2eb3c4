"""Infrastructure clients and their health: Redis (and its pipelined client), the
breaker, probes."""
