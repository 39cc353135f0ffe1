// Status: engine, replicas and load per deployment, and memory per replica.

import { ApiError, getJson, request } from "./api.js";
import { store } from "./store.js";
import { $, clearMessage, el, errorText, formatBytes, showMessage } from "./ui.js";

let timer = null;

export function initStatus() {
  $("status-refresh").addEventListener("click", () => refresh());
}

export function showStatus() {
  refresh();
  clearInterval(timer);
  timer = setInterval(() => {
    if ($("view-status").hidden) clearInterval(timer);
    else refresh();
  }, 5000);
}

async function health() {
  // /health answers 503 while model replicas are down; its body still says why.
  try {
    return await (await request("health")).json();
  } catch (err) {
    if (err instanceof ApiError && err.status === 503) return { status: "degraded", engine: store.engine };
    throw err;
  }
}

async function optional(path) {
  try {
    return await getJson(path);
  } catch (err) {
    // 404: not a Serve cluster; 403: a tenant's key (cluster status is for operator keys).
    if (err instanceof ApiError && (err.status === 404 || err.status === 403)) return null;
    throw err;
  }
}

async function refresh() {
  const box = $("status-message");
  try {
    const [h, status, memory] = await Promise.all([health(), optional("status"), optional("memory")]);
    clearMessage(box);
    renderEngine(h, status);
    renderDeployments(status);
    renderMemory(memory);
    $("status-updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    showMessage(box, errorText(err));
  }
}

function term(label, value) {
  return el("div", {}, el("dt", {}, label), el("dd", {}, value ?? "–"));
}

function renderEngine(h, status) {
  const items = [
    term("Engine", h.engine || store.engine),
    term("Health", h.status),
    term("Model ready", h.model_ready === undefined ? "–" : h.model_ready ? "yes" : "no"),
  ];
  if (status) items.push(term("Application", `${status.application}: ${status.status}`));
  // model_loaded: the original API's name for model_ready, shown once above.
  const skip = new Set(["engine", "status", "model_ready", "model_loaded"]);
  for (const [key, value] of Object.entries(h)) {
    if (!skip.has(key) && (typeof value !== "object" || value === null)) items.push(term(key, String(value)));
  }
  $("status-engine").replaceChildren(...items);
}

function renderDeployments(status) {
  const body = $("status-deployments").tBodies[0];
  if (!status) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 5 }, "Not available: it needs an operator key (ADMIN_API_KEYS), or this app does not run on a Serve cluster.")));
    return;
  }
  const rows = Object.entries(status.deployments || {}).map(([name, d]) => {
    // Starting, stopping or failing replicas are worth a line; running ones are counted already.
    const states = Object.entries(d.replica_states || {})
      .filter(([s]) => s !== "RUNNING")
      .map(([s, n]) => `${n} ${s.toLowerCase()}`)
      .join(", ");
    return el(
      "tr",
      { "data-deployment": name },
      el("th", { scope: "row" }, name),
      el("td", {}, d.status, d.message ? el("div", { class: "hint" }, d.message) : null),
      el("td", {}, `${d.replicas_running ?? 0} running`, states ? el("div", { class: "hint" }, states) : null),
      el("td", {}, String(d.in_flight ?? 0)),
      el("td", {}, String(d.queued ?? 0)),
    );
  });
  body.replaceChildren(...rows);
}

function gpuText(gpus) {
  if (!gpus || !gpus.length) return "no GPU";
  return gpus
    .map((g) => `GPU ${g.index}: ${formatBytes(g.used_bytes)} used of ${formatBytes(g.total_bytes)}`)
    .join("; ");
}

function renderMemory(memory) {
  const body = $("status-memory").tBodies[0];
  if (!memory) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 4 }, "Not available.")));
    return;
  }
  const rows = [];
  for (const [name, d] of Object.entries(memory.deployments || {})) {
    for (const r of d.replicas || []) {
      const host = r.host || {};
      rows.push(
        el(
          "tr",
          {},
          el("th", { scope: "row" }, name, el("div", { class: "hint" }, `${r.node_ip} pid ${r.pid}`)),
          el("td", {}, formatBytes(host.rss_bytes)),
          el("td", {}, `${formatBytes(host.node_available_bytes)} of ${formatBytes(host.node_total_bytes)}`),
          el("td", {}, gpuText(r.gpus)),
        ),
      );
    }
  }
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 4 }, "No replica has reported yet."))]));
}
