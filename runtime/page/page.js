// graphserve live page. Plain JavaScript, no build step, no network but this server.
// Reads /-/graphs (the plans), /-/graphs/<name>.svg?figures=1 (the drawings, stable node
// ids "node:<id>" and "edge:<a>-><b>"), /-/events (figures pushed every half second; falls
// back to polling /-/stats) and sends "Try it" requests with X-Graphserve-Trace: 1.
"use strict";

const FIGURE_LINES = 3; // compiler/render.py FIGURE_LINES: placeholder lines ending each deployment node
const state = { plans: {}, routes: {}, graph: null, stats: null, selected: null, token: null, lastTrace: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function fmt(value, digits = 1) {
  if (value === null || value === undefined) return "–";
  if (Math.abs(value) >= 1000) return Math.round(value).toString();
  return Number(value).toFixed(digits).replace(/\.0+$/, "");
}

function ms(value) {
  return value === null || value === undefined ? "–" : fmt(value, value < 10 ? 2 : 1) + " ms";
}

try { state.token = sessionStorage.getItem("graphserve-token"); } catch (e) { state.token = null; }

// -- graphs and drawings -------------------------------------------------------------------
async function loadGraphs() {
  const response = await fetch("/-/graphs");
  const data = await response.json();
  for (const [name, graph] of Object.entries(data.graphs)) {
    state.plans[name] = graph.plan;
    state.routes[name] = graph.route;
  }
  const names = Object.keys(state.plans);
  const nav = $("graphs");
  nav.replaceChildren();
  for (const name of names) {
    const button = el("button", { type: "button", "data-graph": name, text: name });
    button.addEventListener("click", () => selectGraph(name));
    nav.append(button);
  }
  const wanted = decodeURIComponent(location.hash.replace(/^#/, ""));
  if (names.length) await selectGraph(names.includes(wanted) ? wanted : names[0]);
  else $("drawing-note").textContent = "No graphs are served.";
}

async function selectGraph(name) {
  state.graph = name;
  state.selected = null;
  if (location.hash !== "#" + encodeURIComponent(name)) history.replaceState(null, "", "#" + encodeURIComponent(name));
  for (const button of $("graphs").children) button.classList.toggle("active", button.dataset.graph === name);
  const holder = $("drawing");
  const response = await fetch("/-/graphs/" + encodeURIComponent(name) + ".svg?figures=1");
  if (!response.ok) {
    let message = "the drawing is not available";
    try { message = (await response.json()).error; } catch (e) { /* not JSON */ }
    holder.replaceChildren(el("p", { class: "muted", text: "No drawing: " + message }));
  } else {
    const doc = new DOMParser().parseFromString(await response.text(), "image/svg+xml");
    const svg = document.importNode(doc.documentElement, true);
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    svg.id = "graph-svg";
    holder.replaceChildren(svg);
    for (const node of svg.querySelectorAll("g.node")) {
      const texts = node.querySelectorAll("text");
      if (node.classList.contains("kind-deployment")) {
        for (let i = Math.max(0, texts.length - FIGURE_LINES); i < texts.length; i++) {
          texts[i].classList.add("figure");
          texts[i].textContent = "";
        }
      }
      node.addEventListener("click", () => selectNode(node.id.slice("node:".length)));
    }
  }
  buildForm();
  $("result").hidden = true;
  renderStats();
  showNode(null);
}

function nodeElement(id) {
  return document.getElementById("node:" + id);
}

// -- live figures --------------------------------------------------------------------------
function renderStats() {
  const all = state.stats && state.stats.graphs;
  const stats = all && state.graph ? all[state.graph] : null;
  if (!stats) return;
  const req = stats.requests;
  $("summary").textContent =
    `${req.total} requests · ${fmt(req.rate)} req/s · p50 ${ms(req.p50_ms)} · p99 ${ms(req.p99_ms)} · ` +
    `${req.errors} errors · ${stats.in_flight} in flight` + (stats.ready ? "" : " · not ready");
  for (const [id, figures] of Object.entries(stats.nodes)) {
    const node = nodeElement(id);
    if (!node) continue;
    const plan = planNode(id);
    const dep = plan && stats.deployments[plan.deployment];
    node.dataset.calls = figures.calls;
    node.dataset.errors = figures.errors;
    const lines = node.querySelectorAll("text.figure");
    const values = [
      `${figures.calls} calls · ${fmt(figures.rate)} req/s`,
      `p50 ${ms(figures.p50_ms)} · p99 ${ms(figures.p99_ms)}`,
      `errors ${figures.errors} · batch ${fmt(figures.batch_mean)} · queue ${dep ? dep.queued : "–"} · ` +
        `busy ${dep ? dep.busy : "–"}/${dep ? dep.replicas : "–"}`,
    ];
    lines.forEach((line, i) => { line.textContent = values[i] || ""; });
    node.classList.toggle("has-errors", figures.errors > 0);
    node.classList.toggle("busy", Boolean(dep && dep.busy > 0));
    const ratio = figures.budget_ratio;
    node.classList.toggle("budget-ok", ratio !== null && ratio < 0.7);
    node.classList.toggle("budget-near", ratio !== null && ratio >= 0.7 && ratio < 1);
    node.classList.toggle("budget-over", ratio !== null && ratio >= 1);
  }
  $("error-count").textContent = stats.errors.length ? `(${stats.errors.length})` : "";
  renderErrors($("graph-errors"), stats.errors);
  if (state.selected) showNode(state.selected);
}

function connect() {
  const link = $("link");
  if (!window.EventSource) return poll();
  const source = new EventSource("/-/events");
  let opened = false;
  source.addEventListener("stats", (event) => {
    opened = true;
    link.textContent = "live";
    link.className = "link live";
    state.stats = JSON.parse(event.data);
    renderStats();
  });
  source.onerror = () => {
    if (!opened) { source.close(); poll(); return; } // no event stream here: poll instead
    link.textContent = "reconnecting";
    link.className = "link offline";
  };
}

async function poll() {
  const link = $("link");
  try {
    const response = await fetch("/-/stats");
    state.stats = await response.json();
    link.textContent = "polling";
    link.className = "link polling";
    renderStats();
  } catch (e) {
    link.textContent = "offline";
    link.className = "link offline";
  }
  setTimeout(poll, 1000);
}

// -- node details --------------------------------------------------------------------------
function planNode(id) {
  const plan = state.plans[state.graph];
  return plan ? plan.nodes.find((n) => n.id === id) : null;
}

function selectNode(id) {
  state.selected = id;
  for (const node of document.querySelectorAll("g.node.selected")) node.classList.remove("selected");
  const node = nodeElement(id);
  if (node) node.classList.add("selected");
  showTab("node");
  showNode(id);
}

function showNode(id) {
  const box = $("node-details");
  $("node-hint").hidden = Boolean(id);
  if (!id) { box.replaceChildren(); return; }
  const plan = state.plans[state.graph];
  const node = planNode(id);
  if (!node) { box.replaceChildren(); return; }
  const kind = node.function ? "glue" : node.deployment ? "deployment call" : node.kind;
  const rows = [["node", node.id], ["kind", kind], ["stage", node.stage]];
  const all = state.stats && state.stats.graphs[state.graph];
  const figures = all && all.nodes[id];
  if (node.deployment) {
    const dep = plan.deployments.find((d) => d.name === node.deployment);
    const live = all && all.deployments[node.deployment];
    rows.push(["deployment", `${node.deployment}.${node.method || "__call__"}`]);
    if (dep) {
      rows.push(["import path", dep.import_path]);
      rows.push(["replicas", live ? `${live.busy} busy of ${live.replicas}, ${live.ongoing} calls running, ${live.queued} queued` : dep.num_replicas]);
      rows.push(["limits", `max_ongoing_requests=${dep.max_ongoing_requests} max_queued_requests=${dep.max_queued_requests} max_retries=${dep.max_retries}`]);
      rows.push(["resources", `cpus=${dep.resources.num_cpus} gpus=${dep.resources.num_gpus}`]);
      for (const b of dep.batching) {
        const now = live && live.batching && live.batching[b.method];
        let text = `${b.method}: max_batch_size=${b.max_batch_size} batch_wait_timeout_s=${b.batch_wait_timeout_s} max_concurrent_batches=${b.max_concurrent_batches} (plan)`;
        if (now) {  // an adaptive batcher moves its size limit and wait under load
          text += `; now size limit ${now.size_limit ?? now.max_batch_size}, wait ${now.wait_s ?? now.batch_wait_timeout_s}s`;
          if (now.latency_budget_s != null) text += ` (adaptive, latency budget ${now.latency_budget_s}s)`;
        }
        rows.push(["batching", text]);
      }
    }
  } else if (node.function) {
    rows.push(["function", node.function]);
  }
  if (node.guard) rows.push(["runs when", node.guard.map((all) => all.map((t) => `${t.switch}=arm ${t.arm}`).join(" and ")).join(" or ")]);
  if (node.fused_reason) rows.push(["fused", node.fused_reason]);
  if (node.location) rows.push(["bound at", node.location]);
  rows.push(["output type", node.type]);
  if (figures) {
    rows.push(["calls", `${figures.calls} (${fmt(figures.rate)} req/s)`]);
    rows.push(["latency", `p50 ${ms(figures.p50_ms)}, p99 ${ms(figures.p99_ms)}`]);
    if (figures.budget_ms !== null) rows.push(["latency budget", `${ms(figures.budget_ms)} (p99 at ${Math.round(figures.budget_ratio * 100)}%)`]);
    rows.push(["mean batch", fmt(figures.batch_mean)]);
    rows.push(["errors", figures.errors]);
  }
  const list = el("dl");
  for (const [key, value] of rows) list.append(el("dt", { text: key }), el("dd", { text: String(value) }));
  const errors = all ? all.errors.filter((e) => e.node === id) : [];
  const errorList = el("ol", { class: "errors" });
  renderErrors(errorList, errors);
  box.replaceChildren(list, el("h3", { text: `Recent errors (${errors.length})` }), errorList);
}

function renderErrors(list, errors) {
  list.replaceChildren();
  for (const error of errors) {
    const when = new Date(error.time * 1000).toLocaleTimeString();
    list.append(el("li", {}, `${when} · ${error.status} · request `, el("code", { text: error.request_id }),
      error.node ? ` · ${error.node}` : "", el("br"), error.message));
  }
  if (!errors.length) list.append(el("li", { class: "muted", text: "none" }));
}

// -- try it --------------------------------------------------------------------------------
function schemaOf(plan) {
  const schema = plan.input_json_schema;
  return schema && schema.type === "object" && schema.properties ? schema : null;
}

function buildForm() {
  const plan = state.plans[state.graph];
  const fields = $("fields");
  fields.replaceChildren();
  const schema = schemaOf(plan);
  $("raw-details").open = !schema;
  if (!schema) {
    fields.append(el("p", { class: "muted", text: "This graph has no input schema: write the JSON body." }));
    $("raw").value = "{}";
    return;
  }
  const required = new Set(schema.required || []);
  for (const [name, prop] of Object.entries(schema.properties)) {
    const type = prop.type || (prop.anyOf ? "json" : "json");
    let input;
    if (type === "boolean") input = el("input", { type: "checkbox" });
    else if (type === "number" || type === "integer") input = el("input", { type: "number", step: type === "integer" ? "1" : "any" });
    else if (type === "string") input = el("input", { type: "text" });
    else input = el("textarea", { rows: "2", spellcheck: "false" });
    input.dataset.field = name;
    input.dataset.type = ["boolean", "number", "integer", "string"].includes(type) ? type : "json";
    const example = prop.default !== undefined ? prop.default : (prop.examples ? prop.examples[0] : undefined);
    if (example !== undefined) {
      if (input.type === "checkbox") input.checked = Boolean(example);
      else input.value = input.dataset.type === "json" ? JSON.stringify(example) : example;
    } else if (input.dataset.type === "string") {
      input.value = "hello graphs";
    }
    input.addEventListener("input", syncRaw);
    const title = `${name}${required.has(name) ? "" : " (optional)"}: ${prop.title && prop.title !== name ? prop.title : type}`;
    fields.append(el("label", {}, title, input));
  }
  syncRaw();
}

function formBody() {
  const body = {};
  for (const input of $("fields").querySelectorAll("[data-field]")) {
    const kind = input.dataset.type;
    if (kind === "boolean") body[input.dataset.field] = input.checked;
    else if (input.value === "") continue;
    else if (kind === "number" || kind === "integer") body[input.dataset.field] = Number(input.value);
    else if (kind === "string") body[input.dataset.field] = input.value;
    else {
      try { body[input.dataset.field] = JSON.parse(input.value); } catch (e) { body[input.dataset.field] = input.value; }
    }
  }
  return body;
}

function syncRaw() {
  $("raw").value = JSON.stringify(formBody(), null, 1);
}

async function send(event) {
  event.preventDefault();
  const route = state.routes[state.graph];
  const headers = { "Content-Type": "application/json", "X-Graphserve-Trace": "1" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  $("send").disabled = true;
  let response;
  try {
    response = await fetch(route, { method: "POST", headers, body: $("raw").value });
  } catch (e) {
    showResult(0, null, "the server did not answer: " + e, null);
    $("send").disabled = false;
    return;
  }
  $("send").disabled = false;
  if (response.status === 401 && await askToken()) return send(event);
  const text = await response.text();
  let body = text;
  try { body = JSON.parse(text); } catch (e) { /* not JSON */ }
  let trace = null;
  let output = body;
  if (body && typeof body === "object" && body.trace && ("output" in body || "error" in body)) {
    trace = body.trace;
    output = "output" in body ? body.output : { error: body.error, node: body.node };
  } else if (response.headers.get("x-graphserve-trace")) {
    trace = JSON.parse(response.headers.get("x-graphserve-trace"));
  }
  showResult(response.status, response.headers.get("x-request-id"), output, trace);
}

function showResult(status, requestId, output, trace) {
  $("result").hidden = false;
  const line = $("status-line");
  line.replaceChildren(el("span", { class: status >= 200 && status < 300 ? "status-ok" : "status-bad", text: status ? `HTTP ${status}` : "no answer" }),
    requestId ? ` · request ${requestId}` : "", trace ? ` · ${ms(trace.duration_ms)}` : "");
  $("output").textContent = typeof output === "string" ? output : JSON.stringify(output, null, 2);
  drawPath(trace);
}

function drawPath(trace) {
  for (const node of document.querySelectorAll("g.node.ran, g.node.skipped, g.node.failed")) node.classList.remove("ran", "skipped", "failed");
  for (const edge of document.querySelectorAll("g.edge.ran")) edge.classList.remove("ran");
  const box = $("waterfall");
  box.replaceChildren();
  state.lastTrace = trace;
  if (!trace) { box.append(el("p", { class: "muted", text: "no trace came back" })); return; }
  const ran = new Set(trace.nodes.map((n) => n.node));
  for (const span of trace.nodes) {
    const node = nodeElement(span.node);
    if (node) node.classList.add(span.status === "ok" ? "ran" : "failed");
  }
  for (const id of trace.skipped) {
    const node = nodeElement(id);
    if (node) node.classList.add("skipped");
  }
  for (const edge of document.querySelectorAll("g.edge")) {
    const [from, to] = edge.id.slice("edge:".length).split("->");
    if (ran.has(from) && ran.has(to)) edge.classList.add("ran");
  }
  const total = Math.max(trace.duration_ms, ...trace.nodes.map((n) => n.start_ms + n.duration_ms), 0.001);
  const rows = [...trace.nodes].sort((a, b) => a.start_ms - b.start_ms);
  for (const span of rows) {
    const left = (100 * span.start_ms) / total;
    const width = (100 * span.duration_ms) / total;
    const notes = [ms(span.duration_ms)];
    if (span.replica !== null && span.replica !== undefined) notes.push(`replica ${span.replica}`);
    if (span.batch_size) notes.push(`batch ${span.batch_size}`);
    if (span.status !== "ok") notes.push(span.status);
    const bar = el("div", { class: "wf-bar " + (span.status !== "ok" ? "error" : span.deployment ? "" : "fused"), style: `left:${left}%;width:${width}%` });
    const note = el("span", { class: "wf-note", style: left + width > 60 ? `right:${100 - left + 1}%` : `left:${left + width + 1}%`, text: notes.join(" · ") });
    const label = (span.parent ? "↳ " : "") + span.node;
    box.append(el("div", { class: "wf-row", "data-node": span.node, title: `start ${ms(span.start_ms)}` }, el("span", { class: "wf-name", text: label }), el("div", { class: "wf-track" }, bar, note)));
  }
  if (trace.skipped.length) box.append(el("p", { class: "wf-skipped", text: "skipped (branch not taken or not reached): " + trace.skipped.join(", ") }));
}

// -- token ---------------------------------------------------------------------------------
function askToken() {
  return new Promise((resolve) => {
    const dialog = $("token-dialog");
    $("token-input").value = state.token || "";
    dialog.onclose = () => {
      if (dialog.returnValue === "ok") {
        state.token = $("token-input").value.trim() || null;
        try { sessionStorage.setItem("graphserve-token", state.token || ""); } catch (e) { /* private mode */ }
        resolve(Boolean(state.token));
      } else {
        resolve(false);
      }
    };
    dialog.showModal();
  });
}

// -- tabs and start --------------------------------------------------------------------------
function showTab(name) {
  for (const button of document.querySelectorAll(".tabs button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = tab.id !== "tab-" + name;
}

for (const button of document.querySelectorAll(".tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
$("token-button").addEventListener("click", () => askToken());
$("try-form").addEventListener("submit", send);
loadGraphs().then(connect);
