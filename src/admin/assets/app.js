// The mqttools dashboard: plain JavaScript over the management API
// (EMQX v5 paths), hand-drawn SVG plots, nothing fetched from elsewhere.
"use strict";

const HISTORY = 300;  // samples kept: 5 minutes at one a second
const state = {
  auth: sessionStorage.getItem("mqttools-auth"),
  tab: "overview",
  // Per node (a cluster's /api/v5/stats has one entry each), in the order
  // first seen: {samples: [{t, connections, subscriptions, retained,
  // received, sent} or null while it did not answer], rates: [{in, out} or null]}.
  nodes: new Map(),
  timer: null,
};
// One colour per node (the overview's lines and legend); a single node
// keeps the in/out colours of the stylesheet.
const NODE_COLOURS = ["#2f6fde", "#e07b24", "#14a37f", "#9b4dca", "#c8372d", "#5b6b7d", "#d4a017", "#1b9aaa"];

const $ = (id) => document.getElementById(id);
const text = (s) => (s === null || s === undefined ? "" : String(s));

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = text(value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

async function api(method, path, body) {
  const headers = { "Authorization": "Basic " + state.auth, "X-Mqttools-Dashboard": "1" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    showLogin("The API key was refused.");
    throw new Error("unauthorized");
  }
  const data = res.status === 204 ? null : await res.json();
  if (!res.ok) throw new Error((data && data.message) || res.statusText);
  return data;
}

// ---- login

function showLogin(message) {
  state.auth = null;
  sessionStorage.removeItem("mqttools-auth");
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  state.auth = btoa($("login-key").value + ":" + $("login-secret").value);
  try {
    await api("GET", "/api/v5/nodes");
    sessionStorage.setItem("mqttools-auth", state.auth);
    $("login").hidden = true;
    start();
  } catch (e) {
    if (state.auth) showLogin(e.message);
  }
});

$("logout").addEventListener("click", () => showLogin(""));

// ---- tabs

function selectTab(name) {
  state.tab = name;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== "tab-" + name;
  refreshTab();
}

for (const a of document.querySelectorAll("#tabs a")) {
  a.addEventListener("click", (ev) => {
    ev.preventDefault();
    history.replaceState(null, "", "#" + a.dataset.tab);
    selectTab(a.dataset.tab);
  });
}

// ---- overview: one sample a second, per node

async function sample() {
  const [stats, metrics] = await Promise.all([api("GET", "/api/v5/stats"), api("GET", "/api/v5/metrics")]);
  const t = performance.now() / 1000;
  const byNode = new Map();
  for (const e of stats) byNode.set(e.node, { t, connections: e["live_connections.count"],
    subscriptions: e["subscriptions.count"], retained: e["retained.count"] });
  for (const e of metrics) {
    const s = byNode.get(e.node);
    if (s) { s.received = e["messages.received"]; s.sent = e["messages.sent"]; }
  }
  for (const name of byNode.keys()) {
    if (!state.nodes.has(name)) {
      // A node that joins late starts with the gap it was away for.
      const ticks = state.nodes.size ? state.nodes.values().next().value.samples.length : 0;
      state.nodes.set(name, { samples: new Array(ticks).fill(null), rates: new Array(ticks).fill(null) });
    }
  }
  for (const [name, n] of state.nodes) {
    const s = byNode.get(name);
    const ok = s && s.received !== undefined;
    let prev = null;
    for (let i = n.samples.length - 1; i >= 0 && !prev; i--) prev = n.samples[i];
    n.samples.push(ok ? s : null);
    if (ok && prev && n.samples[n.samples.length - 2]) {
      const dt = Math.max(s.t - prev.t, 0.001);
      n.rates.push({ in: Math.max(0, (s.received - prev.received) / dt), out: Math.max(0, (s.sent - prev.sent) / dt) });
    } else {
      n.rates.push(null);
    }
    while (n.samples.length > HISTORY) n.samples.shift();
    while (n.rates.length > HISTORY) n.rates.shift();
  }
  drawOverview();
}

function fmt(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (n >= 10 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(1);
}

// A line plot of `series` (each {cls, node, colour, values}; a null value
// is a gap) in an SVG of 600x160.
function plot(svg, series) {
  const W = 600, H = 160, left = 40, top = 8, bottom = 18;
  let max = 1;
  for (const s of series) for (const v of s.values) if (v !== null) max = Math.max(max, v);
  const ns = "http://www.w3.org/2000/svg";
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  for (let i = 0; i <= 2; i++) {
    const y = top + (H - top - bottom) * i / 2;
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", left); line.setAttribute("x2", W); line.setAttribute("y1", y); line.setAttribute("y2", y);
    line.setAttribute("class", "grid-line");
    svg.appendChild(line);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", 2); label.setAttribute("y", y + 4); label.setAttribute("class", "axis");
    label.textContent = fmt(max * (2 - i) / 2);
    svg.appendChild(label);
  }
  // The x axis spans at least a minute, then grows to the whole history.
  let span = 60;
  for (const s of series) span = Math.max(span, s.values.length);
  for (const s of series) {
    if (!s.values.some((v) => v !== null)) continue;
    const step = (W - left) / (Math.min(span, HISTORY) - 1);
    const x0 = W - step * (s.values.length - 1);
    let d = "", pen = "M";
    s.values.forEach((v, i) => {
      if (v === null) { pen = "M"; return; }
      d += pen + (x0 + i * step).toFixed(1) + "," + (H - bottom - (H - top - bottom) * v / max).toFixed(1);
      pen = "L";
    });
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    path.setAttribute("class", s.cls);
    if (s.colour) path.style.stroke = s.colour;
    path.dataset.node = s.node;
    path.dataset.max = String(Math.max(...s.values.filter((v) => v !== null)));
    svg.appendChild(path);
  }
  svg.dataset.max = String(max);
}

function drawOverview() {
  const nodes = [...state.nodes.entries()];
  const several = nodes.length > 1;
  const colour = (i) => several ? NODE_COLOURS[i % NODE_COLOURS.length] : null;
  // The cards: the cluster's totals from each node's latest sample.
  const total = { connections: 0, subscriptions: 0, retained: 0, in: 0, out: 0 };
  let any = false, anyRate = false;
  for (const [, n] of nodes) {
    const last = n.samples[n.samples.length - 1];
    const rate = n.rates[n.rates.length - 1];
    if (last) {
      any = true;
      total.connections += last.connections; total.subscriptions += last.subscriptions; total.retained += last.retained;
    }
    if (rate) { anyRate = true; total.in += rate.in; total.out += rate.out; }
  }
  if (any) {
    $("stat-connections").textContent = fmt(total.connections);
    $("stat-subscriptions").textContent = fmt(total.subscriptions);
    $("stat-retained").textContent = fmt(total.retained);
  }
  if (anyRate) {
    $("stat-in").textContent = fmt(total.in);
    $("stat-out").textContent = fmt(total.out);
  }
  const lines = (cls, pick, of) => nodes.map(([name, n], i) => ({ cls, node: name, colour: colour(i),
    values: n[of].map((x) => (x ? pick(x) : null)) }));
  plot($("plot-rate"), [...lines("in", (r) => r.in, "rates"), ...lines("out", (r) => r.out, "rates")]);
  plot($("plot-connections"), lines("value", (s) => s.connections, "samples"));
  plot($("plot-subscriptions"), lines("value", (s) => s.subscriptions, "samples"));
  plot($("plot-retained"), lines("value", (s) => s.retained, "samples"));
  // With several nodes a legend names each one's colour (out: dashed).
  const legend = $("node-legend");
  legend.hidden = !several;
  document.body.classList.toggle("per-node", several);
  if (several && legend.childElementCount !== nodes.length) {
    legend.textContent = "";
    nodes.forEach(([name], i) => {
      const item = document.createElement("span");
      item.dataset.node = name;
      const swatch = document.createElement("i");
      swatch.style.background = colour(i);
      item.append(swatch, name);
      legend.appendChild(item);
    });
  }
}

// ---- clients

async function loadClients() {
  const q = $("clients-search").value.trim();
  const data = await api("GET", "/api/v5/clients?limit=200" + (q ? "&like_clientid=" + encodeURIComponent(q) : ""));
  const body = $("clients-body");
  body.textContent = "";
  for (const c of data.data) {
    const tr = document.createElement("tr");
    tr.dataset.clientid = c.clientid;
    cell(tr, c.clientid, "clientid");
    cell(tr, c.username);
    cell(tr, c.ip_address ? c.ip_address + ":" + c.port : "");
    cell(tr, c.connected ? "connected" : "disconnected", c.connected ? "state-on" : "state-off");
    cell(tr, c.proto_ver === 5 ? "5.0" : c.proto_ver === 4 ? "3.1.1" : text(c.proto_ver));
    cell(tr, c.keepalive);
    cell(tr, c.subscriptions_cnt);
    cell(tr, c.mqueue_len);
    cell(tr, c.connected_at ? new Date(c.connected_at).toLocaleString() : "");
    const td = cell(tr, "");
    if (c.connected) {
      const b = document.createElement("button");
      b.className = "danger kick";
      b.textContent = "Kick";
      b.addEventListener("click", async () => {
        b.disabled = true;
        await api("DELETE", "/api/v5/clients/" + encodeURIComponent(c.clientid)).catch(() => {});
        loadClients();
      });
      td.appendChild(b);
    }
    body.appendChild(tr);
  }
  $("clients-count").textContent = data.meta.count + " client" + (data.meta.count === 1 ? "" : "s");
}

// ---- subscriptions

async function loadSubscriptions() {
  const q = $("subs-search").value.trim();
  const data = await api("GET", "/api/v5/subscriptions?limit=200" + (q ? "&clientid=" + encodeURIComponent(q) : ""));
  const body = $("subs-body");
  body.textContent = "";
  for (const s of data.data) {
    const tr = document.createElement("tr");
    cell(tr, s.clientid);
    cell(tr, s.topic);
    cell(tr, s.qos);
    cell(tr, s.nl ? "yes" : "no");
    cell(tr, s.rap ? "yes" : "no");
    cell(tr, s.rh);
    body.appendChild(tr);
  }
  $("subs-count").textContent = data.meta.count + " subscription" + (data.meta.count === 1 ? "" : "s");
}

// ---- retained

function decodePayload(b64) {
  const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (e) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
  }
}

async function loadRetained() {
  const q = $("retained-filter").value.trim();
  const data = await api("GET", "/api/v5/mqtt/retainer/messages?limit=200" + (q ? "&topic=" + encodeURIComponent(q) : ""));
  const body = $("retained-body");
  body.textContent = "";
  for (const m of data.data) {
    const tr = document.createElement("tr");
    cell(tr, m.topic);
    cell(tr, m.qos);
    const td = cell(tr, "");
    const path = "/api/v5/mqtt/retainer/message/" + encodeURIComponent(m.topic);
    const view = document.createElement("button");
    view.textContent = "View";
    view.addEventListener("click", async () => {
      const full = await api("GET", path);
      $("retained-view").hidden = false;
      $("retained-view-topic").textContent = full.topic;
      $("retained-view-payload").textContent = decodePayload(full.payload);
    });
    const del = document.createElement("button");
    del.textContent = "Delete";
    del.className = "danger";
    del.style.marginLeft = "6px";
    del.addEventListener("click", async () => {
      await api("DELETE", path).catch(() => {});
      loadRetained();
    });
    td.append(view, del);
    body.appendChild(tr);
  }
  $("retained-count").textContent = data.meta.count + " retained message" + (data.meta.count === 1 ? "" : "s");
}

// ---- banned

async function loadBanned() {
  const data = await api("GET", "/api/v5/banned?limit=1000");
  const body = $("banned-body");
  body.textContent = "";
  for (const b of data.data) {
    const tr = document.createElement("tr");
    cell(tr, b.as);
    cell(tr, b.who);
    cell(tr, b.reason);
    cell(tr, new Date(b.at).toLocaleString());
    cell(tr, b.until === "infinity" ? "for ever" : new Date(b.until).toLocaleString());
    const td = cell(tr, "");
    const rm = document.createElement("button");
    rm.textContent = "Remove";
    rm.addEventListener("click", async () => {
      await api("DELETE", "/api/v5/banned/" + encodeURIComponent(b.as) + "/" + encodeURIComponent(b.who)).catch(() => {});
      loadBanned();
    });
    td.appendChild(rm);
    body.appendChild(tr);
  }
}

$("ban-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const ban = { as: $("ban-as").value, who: $("ban-who").value, reason: $("ban-reason").value };
  const minutes = parseInt($("ban-minutes").value, 10);
  if (minutes > 0) ban.until = new Date(Date.now() + minutes * 60000).toISOString().replace(/\.\d+Z$/, "Z");
  try {
    await api("POST", "/api/v5/banned", ban);
    $("ban-error").textContent = "";
    $("ban-who").value = "";
  } catch (e) {
    $("ban-error").textContent = e.message;
  }
  loadBanned();
});

// ---- refresh loop

const loaders = { clients: loadClients, subscriptions: loadSubscriptions, retained: loadRetained, banned: loadBanned };

function refreshTab() {
  const load = loaders[state.tab];
  if (load && state.auth) load().catch(() => {});
}

let tick = 0;
function start() {
  api("GET", "/api/v5/nodes").then((nodes) => {
    $("node").textContent = nodes.map((n) => n.node + " " + n.version).join(", ");
    $("nodes").textContent = nodes.length + " node" + (nodes.length === 1 ? "" : "s") + " running.";
  }).catch(() => {});
  if (state.timer) clearInterval(state.timer);
  state.timer = setInterval(() => {
    sample().catch(() => {});
    if (++tick % 2 === 0) refreshTab();  // tables every 2 s
  }, 1000);
  sample().catch(() => {});
  refreshTab();
}

for (const id of ["clients-search", "subs-search", "retained-filter"]) $(id).addEventListener("input", refreshTab);

const initial = location.hash.replace("#", "");
if (document.querySelector('#tabs a[data-tab="' + initial + '"]')) selectTab(initial);
if (state.auth) {
  $("login").hidden = true;
  start();
} else {
  showLogin("");
}
