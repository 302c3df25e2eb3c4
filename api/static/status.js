// The status page's script (api/status.py inlines it with the page's nonce).
//
// Every few seconds it reads /health and redraws the page from it. Everything
// shown is written with textContent, never as markup, so nothing /health says
// can become HTML. The operator token is typed into the page, kept in this
// tab's sessionStorage (never in the URL, never a cookie) and sent as
// `Authorization: Bearer`, exactly as a script would ask /health; a token
// /health does not accept is dropped at once, so the page never keeps
// counting failed authentications against the operator's address.
"use strict";

(() => {
  const TOKEN_KEY = "skygate.status.token";
  const REFRESH_MS = 5000;
  const TONE = {
    healthy: "good", ok: "good",
    degraded: "warn", draining: "warn", migrations_pending: "warn", cooling: "warn",
    unhealthy: "bad", unavailable: "bad", unreachable: "bad",
    disabled: "off",
  };
  const $ = (id) => document.getElementById(id);

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const pill = (state, text) =>
    h("span", { class: "pill " + (TONE[state] || "off"), "data-status": state }, text || state);

  const fill = (id, ...children) => $(id).replaceChildren(...children.flat());

  const num = (value, digits) => (value === null || value === undefined ? "—" : value.toFixed(digits));

  const percent = (ratio) => (ratio === null || ratio === undefined ? "—" : (ratio * 100).toFixed(1) + " %");

  function duration(seconds) {
    const s = Math.floor(seconds);
    const [d, hr, m] = [Math.floor(s / 86400), Math.floor((s % 86400) / 3600), Math.floor((s % 3600) / 60)];
    if (d) return `${d}d ${hr}h`;
    if (hr) return `${hr}h ${m}m`;
    if (m) return `${m}m ${s % 60}s`;
    return `${s}s`;
  }

  function serviceDetail(name, service) {
    if (name === "llm_providers" && "deployments" in service) {
      const cooling = (service.cooling_down || []).length;
      return `${service.deployments} deployments, ${cooling} cooling down` + (service.demo ? " (demo)" : "");
    }
    if (name === "workers" && "worker_ok" in service) {
      if (service.in_process) return "jobs run in the web process";
      const fresh = (service.workers || []).filter((w) => w.fresh).length;
      return `${fresh} of ${(service.workers || []).length} workers beating`;
    }
    if (name === "agents" && "runs_here" in service) return `${service.runs_here} runs in this worker`;
    if (name === "rate_limiter" && service.backend === "local") return `local (share 1/${service.local_share})`;
    return service.backend || "";
  }

  function renderServices(services, detailed) {
    const rows = Object.entries(services).map(([name, service]) =>
      h("tr", { "data-service": name, "data-status": service.status },
        h("td", null, h("code", null, name)),
        h("td", null, pill(service.status)),
        h("td", { class: "num" }, service.latency_ms === null ? "—" : `${service.latency_ms} ms`),
        detailed ? h("td", null, serviceDetail(name, service)) : null));
    const head = h("tr", null, h("th", null, "Service"), h("th", null, "State"),
      h("th", { class: "num" }, "Latency"), detailed ? h("th", null, "Detail") : null);
    fill("services", h("thead", null, head), h("tbody", null, rows));
  }

  function renderTraffic(traffic, detailed) {
    if (!detailed) return fill("traffic", h("p", { class: "empty" }, "Operator view only."));
    if (!traffic) return fill("traffic", h("p", { class: "empty" }, "Metrics are off (ENABLE_METRICS=false)."));
    const tile = (metric, value, label) =>
      h("div", { class: "tile", "data-metric": metric }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
    fill("traffic",
      h("div", { class: "tiles" },
        tile("requests_per_second", num(traffic.requests_per_second, 2), "API requests / s"),
        tile("server_errors_per_second", num(traffic.server_errors_per_second, 2), "5xx answers / s"),
        tile("client_errors_per_second", num(traffic.client_errors_per_second, 2), "4xx answers / s"),
        tile("error_ratio", percent(traffic.error_ratio), "5xx share of requests"),
        tile("cache_hit_ratio", percent(traffic.cache_hit_ratio), "cache hit ratio")),
      h("p", { class: "caption" },
        `Last ${traffic.window_seconds} s, this instance (all its workers); the fleet's rates are in Prometheus.`));
  }

  function renderDeployments(providers, detailed) {
    const states = providers && providers.deployment_states;
    if (!detailed || !states) return fill("deployments", h("p", { class: "empty" }, "Operator view only."));
    const byProvider = {};
    for (const d of states) {
      const p = (byProvider[d.provider] = byProvider[d.provider] || { total: 0, cooling: 0 });
      p.total += 1;
      p.cooling += d.cooling_down ? 1 : 0;
    }
    const summary = Object.entries(byProvider).map(([name, p], i) =>
      h("span", { "data-provider": name }, i ? " · " : null, h("code", null, name),
        ` ${p.total} deployed, ${p.cooling} cooling down`));
    const rows = states.map((d) =>
      h("tr", { "data-deployment": d.id, "data-cooling": d.cooling_down },
        h("td", null, d.group), h("td", null, h("code", null, d.id)), h("td", null, d.provider),
        h("td", null, d.model), h("td", null, d.cooling_down ? pill("cooling", "cooling down") : pill("ok", "in service"))));
    fill("deployments",
      h("p", { class: "summary" }, summary),
      h("table", null,
        h("thead", null, h("tr", null, ...["Group", "Deployment", "Provider", "Model", "State"].map((t) => h("th", null, t)))),
        h("tbody", null, rows)),
      h("p", { class: "caption" }, "Cooling as seen by the worker that answered (each worker has its own breakers)."));
  }

  function renderWorkers(workers, detailed) {
    if (!detailed || !workers || !("worker_ok" in workers)) {
      return fill("workers", h("p", { class: "empty" }, "Operator view only."));
    }
    const parts = [];
    if (workers.in_process) {
      parts.push(h("p", { class: "summary" }, "Jobs run inside the web process (no separate worker)."));
    } else {
      const rows = (workers.workers || []).map((w) =>
        h("tr", { "data-worker": w.name },
          h("td", null, h("code", null, w.name)), h("td", null, pill(w.fresh ? "ok" : "degraded", w.fresh ? "beating" : "stale")),
          h("td", { class: "num" }, `${num(w.age_seconds, 1)} s`), h("td", null, w.source || ""),
          h("td", { class: "num" }, (w.running || []).length)));
      parts.push(rows.length
        ? h("table", null,
            h("thead", null, h("tr", null, h("th", null, "Worker"), h("th", null, "State"),
              h("th", { class: "num" }, "Last beat"), h("th", null, "Via"), h("th", { class: "num" }, "Running"))),
            h("tbody", null, rows))
        : h("p", { class: "empty" }, "No worker has beaten in the last hour."));
    }
    const q = workers.queue;
    if (q) {
      parts.push(h("p", { class: "caption", id: "queue" },
        `Queue: ${q.pending} waiting, ${q.processing} running` +
        (q.oldest_pending_seconds === null ? "" : `, oldest waiting ${duration(q.oldest_pending_seconds)}`) +
        ` · last 24 h: ${q.succeeded_24h} succeeded, ${q.failed_24h} failed`));
    }
    fill("workers", parts);
  }

  function render(body, detailed) {
    fill("overall", pill(body.status));
    fill("meta", `version ${body.version} · ${body.environment} · up ${duration(body.uptime_seconds)}`);
    renderServices(body.services, detailed);
    renderTraffic(body.traffic, detailed);
    renderDeployments(body.services.llm_providers, detailed);
    renderWorkers(body.services.workers, detailed);
    const a = body.agents;
    fill("agents", `${a.total} agents, ${a.active} active, ${a.runs_active} runs going`);
  }

  function operatorNote(text, warn) {
    const note = $("operator-note");
    note.textContent = text;
    note.className = warn ? "note warn" : "note";
  }

  async function refresh() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    let body;
    try {
      const response = await fetch("/health", { headers, cache: "no-store", credentials: "omit" });
      body = await response.json(); // a 503 (unhealthy) has the same body
    } catch (error) {
      fill("overall", pill("unreachable"));
      fill("updated", "no answer from /health at " + new Date().toLocaleTimeString() + "; showing the last state");
      return;
    }
    const detailed = "traffic" in body; // only the long form has it
    if (token && !detailed) {
      sessionStorage.removeItem(TOKEN_KEY);
      operatorNote("The token was not accepted (wrong, or too many failed attempts from this address) and was forgotten.", true);
    } else if (detailed) {
      operatorNote("Operator view. The token stays in this tab (sessionStorage) until you forget it or close the tab.", false);
    }
    $("forget").hidden = !detailed;
    $("signin").hidden = detailed;
    $("operator").dataset.view = detailed ? "operator" : "public";
    render(body, detailed);
    fill("updated", "updated " + new Date().toLocaleTimeString());
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  }

  let timer = null;
  function schedule(now) {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        await refresh();
      } finally {
        schedule(false); // a drawing error (in the console) must not stop the refreshes
      }
    }, now ? 0 : REFRESH_MS);
  }

  $("operator").addEventListener("submit", (event) => {
    event.preventDefault(); // never submitted: the token must not travel in a URL or a form post
    const input = $("token");
    const token = input.value.trim();
    input.value = "";
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      schedule(true);
    }
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    operatorNote("Token forgotten: public view.", false);
    schedule(true);
  });
  schedule(true);
})();
