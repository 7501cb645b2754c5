// The mqttools dashboard: plain JavaScript over the management API
// (EMQX v5 paths), hand-drawn SVG plots, nothing fetched from elsewhere.
"use strict";

const HISTORY = 300;  // samples kept: 5 minutes at one a second
const state = {
  auth: sessionStorage.getItem("mqttools-auth"),
  tab: "overview",
  samples: [],        // {t, connections, subscriptions, retained, received, sent}
  rates: [],          // {in, out} per second
  timer: null,
};

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

// ---- overview: one sample a second

async function sample() {
  const [stats, metrics] = await Promise.all([
    api("GET", "/api/v5/stats?aggregate=true"),
    api("GET", "/api/v5/metrics?aggregate=true"),
  ]);
  const s = {
    t: performance.now() / 1000,
    connections: stats["live_connections.count"],
    subscriptions: stats["subscriptions.count"],
    retained: stats["retained.count"],
    received: metrics["messages.received"],
    sent: metrics["messages.sent"],
  };
  const prev = state.samples[state.samples.length - 1];
  state.samples.push(s);
  if (prev) {
    const dt = Math.max(s.t - prev.t, 0.001);
    state.rates.push({ in: Math.max(0, (s.received - prev.received) / dt), out: Math.max(0, (s.sent - prev.sent) / dt) });
  }
  while (state.samples.length > HISTORY) state.samples.shift();
  while (state.rates.length > HISTORY) state.rates.shift();
  drawOverview();
}

function fmt(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  if (n >= 10 || Number.isInteger(n)) return String(Math.round(n));
  return n.toFixed(1);
}

// A line plot of `series` (each {cls, values}) in an SVG of 600x160.
function plot(svg, series) {
  const W = 600, H = 160, left = 40, top = 8, bottom = 18;
  let max = 1;
  for (const s of series) for (const v of s.values) max = Math.max(max, v);
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
    if (s.values.length === 0) continue;
    const step = (W - left) / (Math.min(span, HISTORY) - 1);
    const x0 = W - step * (s.values.length - 1);
    const d = s.values.map((v, i) => (i ? "L" : "M") + (x0 + i * step).toFixed(1) + "," +
      (H - bottom - (H - top - bottom) * v / max).toFixed(1)).join("");
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", d);
    path.setAttribute("class", s.cls);
    path.dataset.max = String(Math.max(...s.values));
    svg.appendChild(path);
  }
  svg.dataset.max = String(max);
}

function drawOverview() {
  const last = state.samples[state.samples.length - 1];
  const rate = state.rates[state.rates.length - 1];
  if (last) {
    $("stat-connections").textContent = fmt(last.connections);
    $("stat-subscriptions").textContent = fmt(last.subscriptions);
    $("stat-retained").textContent = fmt(last.retained);
  }
  if (rate) {
    $("stat-in").textContent = fmt(rate.in);
    $("stat-out").textContent = fmt(rate.out);
  }
  plot($("plot-rate"), [
    { cls: "in", values: state.rates.map((r) => r.in) },
    { cls: "out", values: state.rates.map((r) => r.out) },
  ]);
  plot($("plot-connections"), [{ cls: "value", values: state.samples.map((s) => s.connections) }]);
  plot($("plot-subscriptions"), [{ cls: "value", values: state.samples.map((s) => s.subscriptions) }]);
  plot($("plot-retained"), [{ cls: "value", values: state.samples.map((s) => s.retained) }]);
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
