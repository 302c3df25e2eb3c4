"""Agent definitions, the registry, the runner and the WebSocket session protocol.

Arrives with the agents issue; the package exists so the layering
`api -> agents -> core -> database` is visible from the start.
"""
