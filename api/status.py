"""`GET /status`: a status page for people, drawn from `/health`.

The page is rendered here with `/health`'s short form, the one anyone may see
(each service's state and latency, agent counts), so it shows the state without
JavaScript and tells a stranger nothing `/health` would not. Its one script
(`static/status.js`) redraws it from `/health` every few seconds; the details
(models, deployments cooling down, traffic, workers and queue) come only from
`/health` itself, when the operator types the metrics token or the admin key
into the page: a browser opening a page sends no bearer header, a token in the
URL would land in history, logs and Referer headers, and a cookie would need a
login route and CSRF care. The script keeps the token in the tab's
sessionStorage and sends it as `Authorization`, so `/health`'s one check
(`api.probes`) decides, as for any other caller.

The script and styles are inlined with a fresh nonce per response, under a CSP
that allows nothing else (no other script, no inline handler, no framing, no
form submission, no markup sinks). Every value is escaped. Never cached.
"""

from __future__ import annotations

import secrets
from functools import cache
from html import escape
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.probes import health_body
from core.container import ServicesDep

router = APIRouter(tags=["probes"])
STATIC = Path(__file__).with_name("static")
TONES = {
    "healthy": "good",
    "ok": "good",
    "degraded": "warn",
    "draining": "warn",
    "migrations_pending": "warn",
    "unhealthy": "bad",
    "unavailable": "bad",
}
OPERATOR_ONLY = '<p class="empty">Operator view only.</p>'


def policy(nonce: str) -> str:
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src 'nonce-{nonce}'",
            f"style-src 'nonce-{nonce}'",
            "connect-src 'self'",  # the script's fetch of /health
            "img-src data:",  # the empty favicon
            "base-uri 'none'",
            "form-action 'none'",  # the token form is never submitted
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",  # no innerHTML and friends
            "trusted-types 'none'",
        )
    )


@cache
def _asset(name: str) -> str:
    """A static file, read once (on the first page, not at import)."""
    text = (STATIC / name).read_text(encoding="utf-8")
    lowered = text.lower()
    if "</script" in lowered or "</style" in lowered:  # would end the inline element early
        raise ValueError(f"{name} must not contain a closing script or style tag")
    return text


def _pill(state: Any) -> str:
    state = str(state)
    tone = TONES.get(state, "off")
    return f'<span class="pill {tone}" data-status="{escape(state)}">{escape(state)}</span>'


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {s % 60}s" if minutes else f"{s}s"


def _services(services: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, service in services.items():
        latency = service.get("latency_ms")
        rows.append(
            f'<tr data-service="{escape(name)}" data-status="{escape(str(service.get("status")))}">'
            f"<td><code>{escape(name)}</code></td><td>{_pill(service.get('status'))}</td>"
            f'<td class="num">{"—" if latency is None else escape(f"{latency} ms")}</td></tr>'
        )
    head = '<tr><th>Service</th><th>State</th><th class="num">Latency</th></tr>'
    return f"<thead>{head}</thead><tbody>{''.join(rows)}</tbody>"


def render(body: dict[str, Any], nonce: str) -> str:
    """The page for a `/health` short form."""
    agents = body["agents"]
    uptime = _duration(body["uptime_seconds"])
    meta = f"version {body['version']} · {body['environment']} · up {uptime}"
    agents_line = (
        f"{agents['total']} agents, {agents['active']} active, {agents['runs_active']} runs going"
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Skygate status</title>
<link rel="icon" href="data:,">
<style nonce="{nonce}">{_asset("status.css")}</style>
</head>
<body>
<header>
<h1>Skygate</h1>
<span id="overall">{_pill(body["status"])}</span>
<p class="meta"><span id="meta">{escape(meta)}</span> · <span id="updated">as served</span></p>
<span class="spacer"></span>
<form id="operator" method="post" autocomplete="off" data-view="public">
<span id="signin"><label for="token">Operator token</label>
<input id="token" type="password" autocomplete="off" spellcheck="false"
 placeholder="metrics token or admin key">
<button type="submit">Show details</button></span>
<button type="button" id="forget" hidden>Forget token</button>
</form>
</header>
<p class="note" id="operator-note">Models, deployments, traffic, workers and the queue are shown
with the metrics token or the admin key. <noscript>Refreshing needs JavaScript; this is the state
when the page was served.</noscript></p>
<main>
<section><h2>Dependencies</h2><table id="services">{_services(body["services"])}</table></section>
<div class="column">
<section><h2>Traffic</h2><div id="traffic">{OPERATOR_ONLY}</div></section>
<section><h2>Workers and queue</h2><div id="workers">{OPERATOR_ONLY}</div></section>
<section><h2>Agents</h2><p id="agents">{escape(agents_line)}</p></section>
</div>
<section class="wide"><h2>Providers and deployments</h2><div id="deployments">{OPERATOR_ONLY}</div>
</section>
</main>
<script nonce="{nonce}">{_asset("status.js")}</script>
</body>
</html>
"""


@router.get("/status", include_in_schema=False)
async def status_page(request: Request, services: ServicesDep) -> HTMLResponse:
    # Always the short form: the details reach the page only through /health's own check.
    body = await health_body(request, services, detailed=False)
    nonce = secrets.token_urlsafe(18)
    # 200 even when unhealthy: the page is for people (a proxy may swap a 5xx body for
    # its own error page); machines read /health's status code.
    return HTMLResponse(
        render(body, nonce),
        headers={
            "Content-Security-Policy": policy(nonce),
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cache-Control": "no-store",
        },
    )
