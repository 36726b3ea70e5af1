// execrl console: plain JS, no build step, nothing fetched from outside this server.
// Data: /api/* (execrl.service.api); live rows: /api/stream (Server-Sent Events).
"use strict";

const S = { me: null, csrf: null, source: null, rows: [], refreshTimer: null, lastRefresh: 0,
            regTimer: null, flags: {} };
const MAX_TAPE = 400;
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";

// -- helpers ---------------------------------------------------------------------------------
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined)
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return e;
}
function s(tag, attrs, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
const num = (v, d = 0) => (v === null || v === undefined || Number.isNaN(v)) ? "–"
  : Number(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
const bps = (v) => (v === null || v === undefined) ? "–" : (v > 0 ? "+" : "") + num(v, 2);
const bpsClass = (v) => v === null || v === undefined ? "" : v > 0 ? "pos" : "neg";
function clock(ns) {
  if (!ns) return "–";
  const d = new Date(Number(ns) / 1e6);
  return d.toTimeString().slice(0, 8) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
function td(text, cls, attrs) { return h("td", { class: cls, ...(attrs || {}) }, text); }

function status(text, kind) {
  const el = $("status");
  el.textContent = text || "";
  el.className = "status" + (text ? " show " + (kind || "ok") : "");
  if (text && kind !== "err") setTimeout(() => { if (el.textContent === text) status(""); }, 4000);
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && S.csrf) headers["X-CSRF-Token"] = S.csrf;
  const r = await fetch(path, { method, headers, credentials: "same-origin",
                                body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  if (!r.ok) {
    const err = new Error((data && data.error) || `error: HTTP ${r.status}`);
    err.status = r.status; err.data = data;
    throw err;
  }
  return data;
}

// -- login -----------------------------------------------------------------------------------
async function boot() {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", onLogout);
  $("ticket").addEventListener("submit", onTicket);
  $("flag-all").addEventListener("click", onFlagAll);
  $("rollback").addEventListener("click", onRollback);
  $("t-id").value = "C-" + Date.now().toString(36).toUpperCase();
  try { enter(await api("GET", "/api/me")); } catch (_) { showLogin(); }
}

function showLogin() {
  $("app").hidden = true; $("login").hidden = false; $("logout").hidden = true;
  $("whoami").textContent = "";
  $("login-user").focus();
}

async function onLogin(ev) {
  ev.preventDefault();
  $("login-error").textContent = "";
  try {
    enter(await api("POST", "/api/login", { user: $("login-user").value.trim() || null,
                                            token: $("login-token").value.trim() }));
    $("login-token").value = "";
  } catch (e) { $("login-error").textContent = e.message; }
}

async function onLogout() {
  try { await api("POST", "/api/logout"); } catch (_) { /* gone already */ }
  if (S.source) S.source.close();
  S.me = null; S.csrf = null; S.rows = [];
  clearInterval(S.regTimer);
  $("tape-body").textContent = "";
  setLive("off");
  showLogin();
}

function enter(me) {
  S.me = me; S.csrf = me.csrf;
  $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
  const who = $("whoami");
  who.textContent = me.user;
  who.append(h("span", { class: "role", text: me.role }));
  who.dataset.user = me.user; who.dataset.role = me.role;
  const may = (a) => me.permissions.includes(a);
  $("t-send").disabled = !may("order");
  $("t-send").title = may("order") ? "" : `${me.role} may not place orders`;
  $("rollback").disabled = !may("rollback");
  startStream();
  refresh(true);
  refreshRegistry();
  clearInterval(S.regTimer);
  S.regTimer = setInterval(refreshRegistry, 4000);
}

// -- live tape -------------------------------------------------------------------------------
function setLive(state) {
  const el = $("live");
  el.dataset.state = state;
  el.textContent = state === "on" ? "● live" : state === "retry" ? "● reconnecting" : "● offline";
}

function startStream() {
  if (S.source) S.source.close();
  S.rows = [];
  $("tape-body").textContent = "";
  const src = new EventSource("/api/stream?after=0");
  S.source = src;
  src.addEventListener("open", () => setLive("on"));
  src.addEventListener("hello", () => setLive("on"));
  src.addEventListener("error", () => setLive(src.readyState === 2 ? "off" : "retry"));
  src.addEventListener("tape", (ev) => {
    const row = JSON.parse(ev.data);
    addTapeRow(row);
    scheduleRefresh();
  });
}

function fmtAction(row) {
  if (row.action_label) return row.action_label;
  const a = row.action;
  if (a === null || a === undefined) return "";
  const v = Array.isArray(a) ? a : [a];
  return v.map((x) => Number.isInteger(x) ? String(x) : Number(x).toFixed(3)).join(",");
}

function addTapeRow(row) {
  S.rows.push(row);
  const body = $("tape-body");
  const kind = row.kind || "?";
  const tr = h("tr", { class: "new", "data-testid": "tape-row", "data-kind": kind,
                       "data-parent": row.parent_id || "", "data-seq": row.seq });
  const conf = row.confidence;
  tr.append(
    td(clock(row.ts_ns), "dim"),
    td(kind, "k-" + kind),
    td(row.parent_id || "–"),
    td(row.step === null || row.step === undefined ? "" : row.step, "n"),
    td(row.child_id ?? "", "n"),
    td(kind === "done" ? (row.finished_by || "") : kind === "order" ? (row.side || "")
       : kind === "error" ? "" : (row.type || ""), kind === "order" ? (row.side || "") : ""),
    td(row.qty === null || row.qty === undefined ? "" : num(row.qty), "n"),
    td(kind === "done" ? (row.is_bps === null ? "" : bps(row.is_bps) + " bps")
       : (row.px === null || row.px === undefined ? "" : num(row.px, 4)),
       "n " + (kind === "done" ? bpsClass(row.is_bps) : "")),
    td(fmtAction(row), "n", { "data-testid": "tape-action" }),
    td(conf === null || conf === undefined ? "" : num(conf, 2),
       "n " + (conf !== null && conf !== undefined && conf < 0.6 ? "pos" : "")),
    td(kind === "error" ? (row.error || "") : (row.acting || ""), kind === "error" ? "k-error" : "dim"),
  );
  body.prepend(tr);
  while (body.rows.length > MAX_TAPE) body.deleteRow(body.rows.length - 1);
  setTimeout(() => tr.classList.remove("new"), 1300);
  $("tape-meta").textContent = `${num(S.rows.length)} rows · seq ${row.seq}`;
}

function scheduleRefresh() {
  if (S.refreshTimer) return;
  const wait = Math.max(0, 700 - (Date.now() - S.lastRefresh));
  S.refreshTimer = setTimeout(() => { S.refreshTimer = null; refresh(false); }, wait);
}

async function refresh() {
  S.lastRefresh = Date.now();
  try {
    const [orders, an] = await Promise.all([api("GET", "/api/orders?limit=300"),
                                            api("GET", "/api/analytics")]);
    renderOrders(orders.orders);
    renderAnalytics(an);
  } catch (e) {
    if (e.status === 401) { showLogin(); return; }
    status(e.message, "err");
  }
}

// -- orders ----------------------------------------------------------------------------------
function renderOrders(orders) {
  const body = $("orders-body");
  body.textContent = "";
  let working = 0;
  for (const o of orders) {
    if (o.state === "working" || o.state === "queued") working += 1;
    const pct = o.qty ? Math.min(1, (o.filled || 0) / o.qty) : 0;
    const bar = h("span", { class: "bar-prog" }, h("i"));
    bar.firstChild.style.width = (pct * 100).toFixed(1) + "%";
    body.append(h("tr", { "data-testid": "order-row", "data-order": o.order_id, "data-state": o.state },
      td(o.order_id), td(o.symbol || "–"), td(o.side || "–", o.side || ""),
      td(num(o.qty), "n"), td(num(o.filled), "n"),
      h("td", {}, bar, " ", h("span", { class: "dim", text: `${(pct * 100).toFixed(0)}% · step ${o.step}` })),
      h("td", {}, h("span", { class: "st st-" + o.state, "data-testid": "order-state", text: o.state })),
      td(bps(o.is_bps), "n " + bpsClass(o.is_bps)),
      td(o.error ? o.error : (o.finished_by || ""), o.error ? "k-error" : "dim")));
  }
  $("orders-meta").textContent = `${orders.length} shown`;
  $("kpi-orders").textContent = num(orders.length);
  $("kpi-working").textContent = num(working);
}

async function onTicket(ev) {
  ev.preventDefault();
  const [hh, mm] = ($("t-start").value || "09:30").split(":").map(Number);
  const order = {
    order_id: $("t-id").value.trim(), symbol: $("t-symbol").value.trim(), side: $("t-side").value,
    qty: Number($("t-qty").value), start_ts: hh * 3600 + mm * 60,
    horizon_s: Number($("t-horizon").value),
  };
  if ($("t-px").value !== "") order.arrival_px = Number($("t-px").value);
  if ($("t-part").value !== "") order.constraints = { participation: Number($("t-part").value) };
  try {
    const r = await api("POST", "/api/orders", order);
    status(`order ${r.order.order_id} sent: STREAM_ORDERS entry ${r.entry_id}`, "ok");
    $("t-id").value = "C-" + Date.now().toString(36).toUpperCase();
  } catch (e) { status(e.message, "err"); }
}

// -- charts ----------------------------------------------------------------------------------
function box(el) {
  const r = el.getBoundingClientRect();
  return { w: Math.max(200, r.width - 12), h: Math.max(120, r.height - 8) };
}
function svgIn(el, w, hgt) {
  el.textContent = "";
  const svg = s("svg", { viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none" });
  el.append(svg);
  return svg;
}
function empty(el, text) { el.textContent = ""; el.append(h("div", { class: "empty", text })); }
function ticks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
  const mult = [1, 2, 5, 10].find((m) => (hi - lo) / (step * m) <= n) || 10;
  const st = step * mult, out = [];
  for (let v = Math.ceil(lo / st) * st; v <= hi + 1e-9; v += st) out.push(+v.toFixed(10));
  return out;
}
function yAxis(svg, y, lo, hi, x0, x1, fmt) {
  for (const t of ticks(lo, hi, 4)) {
    svg.append(s("line", { class: "grid", x1: x0, x2: x1, y1: y(t), y2: y(t) }));
    svg.append(s("text", { x: x0 - 4, y: y(t) + 3, "text-anchor": "end" }, fmt(t)));
  }
}
function divColor(v, max) {
  const a = Math.min(1, Math.abs(v) / (max || 1));
  // costs (IS > 0) red, savings green, on the panel's dark ground
  const [r, g, b] = v > 0 ? [255, 93, 93] : [47, 191, 113];
  const mix = (c, base) => Math.round(base + (c - base) * (0.18 + 0.82 * a));
  return `rgb(${mix(r, 22)},${mix(g, 30)},${mix(b, 41)})`;
}

function renderHeatmap(hm) {
  const el = $("heatmap");
  if (!hm.cells.length) { empty(el, "no finished orders yet"); return; }
  const { w, h: H } = box(el);
  const bins = hm.cells.map((c) => c.bin);
  let lo = Math.min(...bins), hi = Math.max(...bins);
  const perDay = 1440 / hm.bin_min;
  while (hi - lo + 1 < Math.min(8, perDay)) { if (lo > 0) lo -= 1; if (hi - lo + 1 < 8 && hi < perDay - 1) hi += 1; if (lo === 0 && hi === perDay - 1) break; }
  // one symbol: its row is the desk's row, shown once
  const rows = hm.rows.length === 2 ? hm.rows.slice(0, 1) : hm.rows, nb = hi - lo + 1;
  const cells = hm.cells.filter((c) => rows.includes(c.row));
  const left = 64, top = 6, bottom = 30;
  const cw = (w - left - 4) / nb, ch = Math.min(56, (H - top - bottom) / rows.length);
  const svg = svgIn(el, w, H);
  const max = Math.max(...cells.map((c) => Math.abs(c.mean_bps)), 1e-9);
  rows.forEach((r, i) => svg.append(s("text", { x: left - 5, y: top + i * ch + ch / 2 + 3, "text-anchor": "end" }, r)));
  for (let b = lo; b <= hi; b += 1) {
    const x = left + (b - lo) * cw;
    if ((b - lo) % Math.max(1, Math.ceil(nb / 8)) === 0) {
      const m = b * hm.bin_min;
      svg.append(s("text", { x: Math.min(x + cw / 2, w - 16), y: top + rows.length * ch + 12, "text-anchor": "middle" },
                   `${String(Math.floor(m / 60)).padStart(2, "0")}:${String(m % 60).padStart(2, "0")}`));
    }
    rows.forEach((_, i) => svg.append(s("rect", { x: x + 0.5, y: top + i * ch + 0.5, width: cw - 1, height: ch - 1, fill: "#151d27" })));
  }
  for (const c of cells) {
    const i = rows.indexOf(c.row), x = left + (c.bin - lo) * cw, y = top + i * ch;
    const rect = s("rect", { x: x + 0.5, y: y + 0.5, width: cw - 1, height: ch - 1, fill: divColor(c.mean_bps, max),
                             "data-testid": "heat-cell" });
    rect.append(s("title", {}, `${c.row} ${c.start} UTC: ${c.mean_bps.toFixed(2)} bps mean IS over ${c.n} order(s)`));
    svg.append(rect);
    if (cw > 24 && ch > 12) {
      svg.append(s("text", { class: "cell", x: x + cw / 2, y: y + ch / 2 + (ch > 26 ? 0 : 3), "text-anchor": "middle" }, c.mean_bps.toFixed(cw > 40 ? 1 : 0)));
      if (ch > 26) svg.append(s("text", { class: "cell dimcell", x: x + cw / 2, y: y + ch / 2 + 12, "text-anchor": "middle" }, `n=${c.n}`));
    }
  }
  // the colour scale: savings (IS < 0) green, costs red
  const ly = top + rows.length * ch + 18;
  svg.append(s("text", { x: left, y: ly + 8 }, `−${max.toFixed(0)}`));
  for (let k = 0; k < 11; k += 1) {
    const v = (k - 5) / 5 * max;
    svg.append(s("rect", { x: left + 30 + k * 10, y: ly, width: 10, height: 8, fill: divColor(v, max) }));
  }
  svg.append(s("text", { x: left + 30 + 114, y: ly + 8 }, `+${max.toFixed(0)} bps`));
}

function renderConfidence(cf) {
  const el = $("confidence");
  $("conf-meta").textContent = `${num(cf.n)} of ${num(cf.decisions)} decisions with a confidence · floor ${cf.floor}`;
  if (!cf.n) {
    empty(el, cf.decisions ? `${num(cf.decisions)} decisions, none with a confidence: the acting policy reports no action probabilities (baselines and value policies have none)` : "no decisions yet");
    return;
  }
  const { w, h: H } = box(el);
  const svg = svgIn(el, w, H);
  const left = 34, bottom = 16, top = 6, n = cf.counts.length;
  const max = Math.max(...cf.counts, 1);
  const x = (v) => left + v * (w - left - 6), y = (c) => H - bottom - (c / max) * (H - bottom - top);
  yAxis(svg, y, 0, max, left, w - 6, (t) => num(t));
  cf.counts.forEach((c, i) => {
    const e0 = cf.edges[i], e1 = cf.edges[i + 1];
    const r = s("rect", { x: x(e0) + 1, y: y(c), width: Math.max(1, x(e1) - x(e0) - 2), height: H - bottom - y(c),
                          fill: e1 <= cf.floor ? "#a8453f" : "#3f86d6" });
    r.append(s("title", {}, `${e0.toFixed(2)}–${e1.toFixed(2)}: ${c}`));
    svg.append(r);
  });
  svg.append(s("line", { class: "floor", x1: x(cf.floor), x2: x(cf.floor), y1: top, y2: H - bottom }));
  for (const t of [0, 0.2, 0.4, 0.6, 0.8, 1]) svg.append(s("text", { x: x(t), y: H - 4, "text-anchor": "middle" }, t.toFixed(1)));
  svg.append(s("line", { class: "axis", x1: left, x2: w - 6, y1: H - bottom, y2: H - bottom }));
}

function lineChart(el, pts, opts) {
  // pts: [{x, y, y2?}] ; opts: {hline, hlineClass, fmt}
  const { w, h: H } = box(el);
  const svg = svgIn(el, w, H);
  const left = 40, bottom = 14, top = 8, right = 6;
  const ys = pts.map((p) => p.y).concat(opts.hline !== undefined ? [opts.hline] : []);
  let lo = Math.min(0, ...ys), hi = Math.max(...ys);
  if (opts.symmetric) { const m = Math.max(Math.abs(lo), Math.abs(hi)); lo = Math.min(lo, -m * 0.1); }
  if (!(hi > lo)) hi = lo + 1;
  hi += (hi - lo) * 0.08;
  const x = (i) => left + (pts.length < 2 ? 0.5 : i / (pts.length - 1)) * (w - left - right);
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (H - top - bottom);
  yAxis(svg, y, lo, hi, left, w - right, opts.fmt);
  if (lo < 0) svg.append(s("line", { class: "axis", x1: left, x2: w - right, y1: y(0), y2: y(0) }));
  if (opts.hline !== undefined) svg.append(s("line", { class: opts.hlineClass || "slo", x1: left, x2: w - right, y1: y(opts.hline), y2: y(opts.hline) }));
  if (opts.dots) {
    pts.forEach((p, i) => svg.append(s("circle", { cx: x(i), cy: y(p.y), r: 2.2, fill: p.y > 0 ? "#ff7b6e" : "#4cd08d", opacity: 0.8 })));
  } else {
    svg.append(s("path", { class: "line", d: pts.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.y).toFixed(1)}`).join("") }));
  }
  if (pts.length && pts[0].y2 !== undefined) {
    svg.append(s("path", { class: "mean", d: pts.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.y2).toFixed(1)}`).join("") }));
  }
  svg.append(s("text", { x: w - right, y: H - 2, "text-anchor": "end" }, opts.xlabel || ""));
  return svg;
}

function renderLatency(lt) {
  const el = $("latency");
  $("lat-meta").textContent = lt.n ? `p50 ${num(lt.p50, 1)} · p95 ${num(lt.p95, 1)} · p99 ${num(lt.p99, 1)} ms · SLO ${lt.slo_ms} ms · ${lt.above_slo} above` : "market entry → decision on the streams";
  $("kpi-p95").textContent = lt.n ? `${num(lt.p95, 1)} ms` : "–";
  $("kpi-p95").className = "v " + (lt.p95 > lt.slo_ms ? "pos" : "");
  if (!lt.series.length) { empty(el, "no decisions yet"); return; }
  lineChart(el, lt.series.map((p) => ({ y: p.ms })), { hline: lt.slo_ms, fmt: (t) => num(t, 0), xlabel: `last ${lt.series.length} decisions` });
}

function renderDrift(dr) {
  const el = $("drift");
  const n = dr.series.length;
  $("drift-meta").textContent = n ? `${n} orders · rolling mean over ${dr.window}${dr.has_reward ? "" : " · reward: not in done records"}` : "";
  $("kpi-is").textContent = n ? `${bps(dr.series[n - 1].mean_bps)} bps` : "–";
  $("kpi-is").className = "v " + (n ? bpsClass(dr.series[n - 1].mean_bps) : "");
  if (!n) { empty(el, "no finished orders yet"); return; }
  lineChart(el, dr.series.map((p) => ({ y: p.is_bps, y2: p.mean_bps })), { dots: true, fmt: (t) => num(t, 0), xlabel: "orders, oldest → newest (bps)" });
}

function renderFallback(fb) {
  $("fb-meta").textContent = `RL ${fb.n_policy} · fallback ${fb.n_fallback}` +
    (fb.rate === null ? "" : ` · rate ${(fb.rate * 100).toFixed(1)}%`) +
    ` · mean IS ${bps(fb.mean_is_policy)} / ${bps(fb.mean_is_fallback)}`;
  $("kpi-fallback").textContent = fb.rate === null ? "–" : `${(fb.rate * 100).toFixed(1)}%`;
  const fill = (id, rows, by) => {
    const body = $(id);
    body.textContent = "";
    for (const r of rows.slice(0, 60)) body.append(h("tr", { "data-testid": "fallback-row" },
      td(r.parent_id), td(r.symbol || ""), td(bps(r.is_bps), "n " + bpsClass(r.is_bps)), by ? td(r.finished_by, "dim") : null));
    if (!rows.length) body.append(h("tr", {}, h("td", { class: "dim", colspan: 4, text: "none" })));
  };
  fill("fb-policy", fb.policy, false);
  fill("fb-fallback", fb.fallback, true);
}

function renderAnalytics(an) {
  $("kpi-decisions").textContent = num(an.orders.decisions);
  renderHeatmap(an.heatmap);
  renderConfidence(an.confidence);
  renderLatency(an.latency);
  renderDrift(an.drift);
  renderFallback(an.fallback);
}

// -- registry --------------------------------------------------------------------------------
const reason = () => $("reason").value.trim();

async function act(label, method, path, body) {
  try {
    const r = await api(method, path, body);
    status(`${label}: done`, "ok");
    await refreshRegistry();
    return r;
  } catch (e) { status(e.message, "err"); return null; }
}

function policyButtons(p) {
  const may = (a) => S.me && S.me.permissions.includes(a);
  const out = [];
  const btn = (action, label, fn, cls) => {
    const b = h("button", { class: "mini " + (cls || ""), "data-action": action, "data-testid": `btn-${action}`, onclick: fn }, label);
    if (!may(action)) { b.disabled = true; b.title = `${S.me.role} may not ${action}`; }
    out.push(b);
  };
  const base = `/api/policies/${p.policy_hash}`;
  if (p.state === "candidate" || p.state === "shadow")
    btn("promote", p.state === "candidate" ? "→ shadow" : "→ canary", () => act(`promote ${p.short}`, "POST", base + "/promote", { reason: reason() }));
  if (p.state === "canary" && !p.request)
    btn("request", "request live", () => act(`request ${p.short} live`, "POST", base + "/request", { target: "live", reason: reason() }));
  if (p.request)
    btn("approve", "approve", async () => {
      const r = await act(`approve ${p.short}`, "POST", base + "/approve", { target: p.request.target, reason: reason() });
      if (r) status(r.promoted ? `${p.short} is ${r.state}: promoted by ${r.request.approvers.join(" + ")}` : `approval recorded (${r.request.approvers.length} of 2)`, "ok");
    });
  if (p.state === "quarantined")
    btn("release", "release", () => act(`release ${p.short}`, "POST", base + "/release", { reason: reason() }));
  else
    btn("quarantine", "quarantine", () => act(`quarantine ${p.short}`, "POST", base + "/quarantine", { reason: reason() }), "warn");
  const on = p.flagged;
  btn(on ? "unflag" : "flag", on ? "unflag" : "to fallback",
      () => act(`${on ? "unflag" : "flag"} ${p.short}`, "POST", "/api/flags", { target: p.policy_hash, fallback: !on, reason: reason() }),
      on ? "warn on" : "warn");
  return out;
}

async function refreshRegistry() {
  if (!S.me) return;
  try {
    const [pol, ev] = await Promise.all([api("GET", "/api/policies"), api("GET", "/api/events?limit=80")]);
    renderRegistry(pol);
    renderEvents(ev.events);
  } catch (e) {
    if (e.status === 401) { showLogin(); return; }
    status(e.message, "err");
  }
}

function renderRegistry(pol) {
  S.flags = pol.flags;
  const body = $("registry-body");
  body.textContent = "";
  for (const p of pol.policies) {
    const req = p.request ? `#${p.request.request_id} by ${p.request.requested_by} · ${p.request.approvers.length}/2` + (p.request.approvers.length ? ` (${p.request.approvers.join(", ")})` : "") : "";
    body.append(h("tr", { "data-testid": "policy-row", "data-hash": p.policy_hash, "data-state": p.state },
      td(p.short, "", { title: p.policy_hash }), td(p.name), td(p.algo || "–", "dim"), td(p.scope),
      h("td", {}, h("span", { class: "st st-" + p.state, "data-testid": "policy-state", text: p.state })),
      td(bps(p.vs_twap_bps), "n " + bpsClass(p.vs_twap_bps)),
      td(req, "dim", { "data-testid": "policy-request" }),
      td(p.fallback ? "FALLBACK" : "policy", p.fallback ? "pos" : "dim", { "data-testid": "policy-flag" }),
      h("td", {}, ...policyButtons(p))));
  }
  if (!pol.policies.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "dim", text: "no policies registered (execrl registry register)" })));
  const all = $("flag-all");
  all.classList.toggle("on", pol.all_fallback);
  all.dataset.on = pol.all_fallback ? "1" : "0";
  all.textContent = pol.all_fallback ? "ALL ON FALLBACK · hand back" : "all to fallback";
  const need = pol.all_fallback ? "unflag" : "flag";
  all.disabled = !S.me.permissions.includes(need);
  all.title = all.disabled ? `${S.me.role} may not ${need}` : "runbook step 1: every policy's flow to the fallback";
  const live = pol.policies.filter((p) => p.state === "live").map((p) => `${p.short}@${p.scope}`);
  $("reg-meta").textContent = `${pol.policies.length} policies · live: ${live.join(", ") || "none"}`;
}

function renderEvents(events) {
  const body = $("events-body");
  body.textContent = "";
  for (const e of events) body.append(h("tr", { "data-testid": "event-row", "data-action": e.action },
    td((e.at || "").replace("T", " ").slice(0, 19), "dim"), td(e.actor), td(e.action),
    td((e.policy_hash || "").slice(0, 12)), td(e.from_state || e.to_state ? `${e.from_state || "·"} → ${e.to_state || "·"}` : ""),
    td(e.reason || "", "dim")));
}

async function onFlagAll() {
  const on = $("flag-all").dataset.on === "1";
  await act(on ? "all policies back" : "all policies to the fallback", "POST", "/api/flags", { target: "*", fallback: !on, reason: reason() });
}
async function onRollback() {
  const r = await act("roll back scope *", "POST", "/api/rollback", { scope: "*", reason: reason() });
  if (r) status(`rolled back: ${r.reinstated.slice(0, 12)} live again${r.quarantined ? `, ${r.quarantined.slice(0, 12)} quarantined` : ""}`, "ok");
}

window.addEventListener("resize", () => scheduleRefresh());
document.addEventListener("DOMContentLoaded", boot);
