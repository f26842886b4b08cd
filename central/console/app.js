/* hybrid-ems operator console: renders from the event stream (/api/v1/stream); see docs/console.md. */
"use strict";

(() => {
  const TOKEN_KEY = "hybrid-ems-token";
  const COOKIE_REFRESH_MS = 240000;
  const RECONNECT_MS = 2000;
  const MAX_EVENTS = 300;
  const KINDS = ["cabinet_state", "edge_connected", "edge_disconnected", "upload", "upload_superseded",
    "plan", "run", "push", "reset"];
  const ROLE_RANK = { viewer: 1, uploader: 2, operator: 3 };

  const $ = (id) => document.getElementById(id);
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    role: null,
    site: null,
    cabinets: new Map(),
    plan: null,
    upload: null,
    day: null,
    now: null,
    source: null,
    cookieTimer: null,
    reconnectTimer: null,
    events: [],
    live: [],
    dayTimer: null,
    resetting: new Set(),
  };

  // ---------------------------------------------------------------------------------------- helpers

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  const kw = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} kW`);
  const pct = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} %`);
  const ms = (text) => Date.parse(text);
  const can = (role) => state.role !== null && ROLE_RANK[state.role] >= ROLE_RANK[role];

  function headers(extra) {
    const out = Object.assign({}, extra || {});
    if (state.token) out.Authorization = `Bearer ${state.token}`;
    return out;
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin" }, options || {});
    opts.headers = headers(opts.headers);
    const response = await fetch(path, opts);
    let body = null;
    const text = await response.text();
    try { body = text ? JSON.parse(text) : null; } catch (err) { body = { detail: text }; }
    return { status: response.status, ok: response.ok, body };
  }

  // ------------------------------------------------------------------------------------ access, stream

  async function start() {
    stop();
    const who = await api("/api/v1/whoami").catch(() => null);
    if (who === null) { streamLost(); scheduleReconnect(); return; }
    if (who.status === 401 || who.status === 403) {
      state.role = null;
      authProblem(state.token ? "This token is not valid here." : "Reads need a token here: enter one above.");
      renderRole();
      return;
    }
    if (who.status === 429) { authProblem("Too many failed attempts from this address: wait a minute."); return; }
    authProblem("");
    state.role = who.body.role;
    $("who").textContent = who.body.name ? `${who.body.name} (${who.body.role})` : "no token (read only)";
    renderRole();
    if (state.token) {
      const cookie = await api("/api/v1/stream-cookie", { method: "POST" });
      if (!cookie.ok) { authProblem(cookie.body && cookie.body.detail ? cookie.body.detail : "no stream cookie"); return; }
      state.cookieTimer = setInterval(() => api("/api/v1/stream-cookie", { method: "POST" }), COOKIE_REFRESH_MS);
    }
    connect();
  }

  function stop() {
    if (state.source) { state.source.close(); state.source = null; }
    if (state.cookieTimer) { clearInterval(state.cookieTimer); state.cookieTimer = null; }
    if (state.reconnectTimer) { clearTimeout(state.reconnectTimer); state.reconnectTimer = null; }
  }

  function connect() {
    const source = new EventSource("/api/v1/stream");
    state.source = source;
    source.onopen = () => streamUp();
    source.onmessage = (message) => {
      streamUp();
      let event;
      try { event = JSON.parse(message.data); } catch (err) { return; }
      handle(event);
    };
    source.addEventListener("end", () => {
      source.close();
      streamLost();
      authProblem("The stream ended: the token was revoked. Enter another token.");
    });
    source.onerror = () => {
      streamLost();
      if (source.readyState === EventSource.CLOSED) { // refused (e.g. the cookie expired): start again
        source.close();
        scheduleReconnect();
      }
    };
  }

  function scheduleReconnect() {
    if (state.reconnectTimer) return;
    state.reconnectTimer = setTimeout(() => { state.reconnectTimer = null; start(); }, RECONNECT_MS);
  }

  function streamUp() {
    $("stream-banner").hidden = true;
    const pill = $("stream-state");
    pill.textContent = "live";
    pill.className = "pill on";
  }

  function streamLost() {
    const banner = $("stream-banner");
    if (banner.hidden) document.body.dataset.streamLosses = String(Number(document.body.dataset.streamLosses || 0) + 1);
    banner.hidden = false;
    const pill = $("stream-state");
    pill.textContent = "reconnecting";
    pill.className = "pill off";
  }

  function authProblem(text) {
    const banner = $("auth-banner");
    banner.textContent = text;
    banner.hidden = !text;
  }

  // ------------------------------------------------------------------------------------------ events

  function handle(event) {
    if (event.at) { state.now = ms(event.at); $("clock").textContent = event.at.replace("T", " ").slice(0, 19) + " UTC"; }
    switch (event.type) {
      case "snapshot":
        applySnapshot(event);
        return;
      case "telemetry":
        updateCabinet(event.cabinet_id, { telemetry: stripMeta(event) });
        recordActual(event.cabinet_id, event);
        renderSiteNow();
        return;
      case "cabinet_state":
        updateCabinet(event.cabinet_id, { state: event.state, connected: event.state !== "offline",
          telemetry: event.telemetry || (event.state === "offline" ? null : undefined) });
        break;
      case "edge_connected":
      case "edge_disconnected":
        updateCabinet(event.cabinet_id, { connected: event.type === "edge_connected" });
        break;
      case "push":
        updateCabinet(event.cabinet_id, { last_push: event });
        break;
      case "upload":
        state.upload = event;
        loadDaySoon();
        break;
      case "plan":
        state.plan = event;
        loadDaySoon();
        break;
      default:
        break;
    }
    addLiveEvent(event);
  }

  function stripMeta(event) {
    const out = Object.assign({}, event);
    delete out.id; delete out.type; delete out.at; delete out.cabinet_id;
    return out;
  }

  function applySnapshot(snap) {
    state.site = snap.site;
    $("site-name").textContent = snap.site.name;
    document.title = `${snap.site.name}: hybrid-ems console`;
    state.cabinets = new Map(snap.cabinets.map((c) => [c.cabinet_id, c]));
    state.plan = snap.plan;
    state.upload = snap.upload;
    fillSelects();
    renderCabinets();
    renderSiteNow();
    mark("ems:snapshot-rendered");
    loadDay();
    loadEvents(); // a (re)connection may have missed some
  }

  function mark(name) { // first occurrence only: read by `ems bench console`
    if (window.performance && performance.mark && !performance.getEntriesByName(name).length) performance.mark(name);
  }

  function updateCabinet(id, changes) {
    const cabinet = state.cabinets.get(id);
    if (!cabinet) return;
    for (const [key, value] of Object.entries(changes)) if (value !== undefined) cabinet[key] = value;
    if (changes.telemetry && !changes.state && cabinet.state === "offline") cabinet.state = changes.telemetry.mode;
    renderCard(cabinet);
  }

  // ------------------------------------------------------------------------------------------ render

  function renderRole() {
    const actions = $("actions");
    actions.hidden = !can("uploader");
    $("drop").hidden = !can("uploader");
    $("optimize").hidden = !can("operator");
    if (state.cabinets.size) renderCabinets();
  }

  function fillSelects() {
    const scope = $("chart-scope");
    const kept = scope.value;
    scope.replaceChildren(h("option", { value: "" }, "site"),
      ...[...state.cabinets.keys()].map((id) => h("option", { value: id }, id)));
    scope.value = state.cabinets.has(kept) ? kept : "";
    const cab = $("event-cabinet");
    const keptCab = cab.value;
    cab.replaceChildren(h("option", { value: "" }, "all cabinets"),
      ...[...state.cabinets.keys()].map((id) => h("option", { value: id }, id)));
    cab.value = state.cabinets.has(keptCab) ? keptCab : "";
  }

  function renderCabinets() {
    const box = $("cabinets");
    box.replaceChildren(...[...state.cabinets.values()].map((c) => {
      const card = h("article", { class: "card", id: `card-${c.cabinet_id}`, "data-cabinet": c.cabinet_id });
      fillCard(card, c);
      return card;
    }));
    renderSummary();
  }

  function renderCard(cabinet) {
    const card = document.getElementById(`card-${cabinet.cabinet_id}`);
    if (!card) { renderCabinets(); return; }
    fillCard(card, cabinet);
    renderSummary();
  }

  function fillCard(card, c) {
    const t = c.telemetry;
    const stateName = c.state || "offline";
    card.setAttribute("data-state", stateName);
    const push = c.last_push;
    const children = [
      h("header", {}, h("span", { class: "id" }, c.cabinet_id), h("span", { class: "state" }, stateName)),
      h("div", { class: "soc", title: "state of charge" }, h("i", { style: `width:${t ? Math.max(0, Math.min(100, t.soc_pct)) : 0}%` })),
      h("div", { class: "row" }, h("span", {}, `SoC ${pct(t && t.soc_pct)}`), h("span", { title: "cycle time p99" }, t ? `p99 ${t.cycle_time_p99_ms.toFixed(1)} ms` : "")),
      h("div", { class: "row", title: "actual / setpoint (+ discharge)" }, h("span", {}, `P ${kw(t && t.active_power_kw)}`), h("span", {}, `set ${kw(t && t.setpoint_kw)}`)),
      h("div", { class: "row", title: "charge / discharge limit" }, h("span", {}, `lim −${t ? t.charge_limit_kw.toFixed(0) : "–"}/+${t ? t.discharge_limit_kw.toFixed(0) : "–"} kW`),
        h("span", { class: c.connected ? "ok" : "bad", title: c.connection_error || "" }, c.connected ? "OPC UA ✓" : "OPC UA ✗")),
      h("div", { class: "row", title: push ? push.message : "" },
        h("span", {}, "push"), h("span", { class: push ? (push.ok ? "ok" : "bad") : "" }, push ? `${push.status} ${push.pushed_at.slice(11, 16)}` : "–")),
    ];
    const why = t && (t.interlock_active || stateName === "tripped") ? t.interlock_reason || "interlock" : "";
    if (why) children.push(h("div", { class: "why", title: why }, why));
    if (stateName === "tripped" && can("operator")) children.push(resetControls(c.cabinet_id));
    const result = card.querySelector(".reset-result");
    card.replaceChildren(...children);
    if (result) card.appendChild(result);
  }

  function resetControls(id) {
    const box = h("div", { class: "reset-box" });
    if (state.resetting.has(id)) {
      box.append(h("span", {}, "Reset the interlock? "),
        h("button", { class: "reset-confirm", type: "button", onclick: () => doReset(id) }, "Yes, reset"),
        h("button", { class: "reset-cancel", type: "button", onclick: () => { state.resetting.delete(id); renderCard(state.cabinets.get(id)); } }, "Cancel"));
    } else {
      box.append(h("button", { class: "reset", type: "button", onclick: () => { state.resetting.add(id); renderCard(state.cabinets.get(id)); } }, "Reset interlock…"));
    }
    return box;
  }

  async function doReset(id) {
    state.resetting.delete(id);
    renderCard(state.cabinets.get(id));
    const answer = await api(`/api/v1/cabinets/${encodeURIComponent(id)}/reset-interlock`, { method: "POST" });
    const card = document.getElementById(`card-${id}`);
    const text = answer.body && answer.body.message !== undefined
      ? `${answer.body.accepted ? "Accepted" : "Refused"}: ${answer.body.message}`
      : `Not sent: ${answer.body ? answer.body.detail : answer.status}`;
    if (card) {
      const old = card.querySelector(".reset-result");
      if (old) old.remove();
      card.appendChild(h("div", { class: `reset-result ${answer.ok ? "ok" : "bad"}` }, text));
    }
    showResult(`Reset ${id}: ${text}`, answer.ok);
  }

  function renderSummary() {
    const counts = {};
    for (const c of state.cabinets.values()) counts[c.state || "offline"] = (counts[c.state || "offline"] || 0) + 1;
    $("fleet-summary").textContent = Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(" · ");
  }

  function intervalIndex(at) {
    const day = state.day;
    if (!day || !day.upload || at === null) return null;
    const index = Math.floor((at - ms(day.upload.start)) / (day.upload.interval_minutes * 60000));
    return index >= 0 && index < day.upload.load_kw.length ? index : null;
  }

  function planValueAt(plan, at, pick) {
    if (!plan) return null;
    const index = Math.floor((at - ms(plan.start)) / (plan.interval_minutes * 60000));
    const values = pick(plan);
    return index >= 0 && index < values.length ? values[index] : null;
  }

  function renderSiteNow() {
    const site = state.site;
    if (!site) return;
    let battery = 0;
    let online = 0;
    for (const c of state.cabinets.values()) if (c.telemetry) { battery += c.telemetry.active_power_kw; online += 1; }
    const index = intervalIndex(state.now);
    const day = state.day;
    const load = index === null ? null : day.upload.load_kw[index];
    const pv = index === null ? null : day.upload.pv_kw[index];
    const grid = load === null ? null : load - pv - battery;
    const expected = day && state.now !== null ? planValueAt(day.latest_plan, state.now, (p) => p.grid_kw) : null;
    const headroom = grid === null ? null : (grid >= 0 ? site.grid_import_limit_kw - grid : site.grid_export_limit_kw + grid);
    const values = [
      ["Grid (estimated, + import)", kw(grid)], ["Expected grid (plan)", kw(expected)],
      ["Import / export limit", `${site.grid_import_limit_kw.toFixed(0)} / ${site.grid_export_limit_kw.toFixed(0)} kW`],
      ["PoC headroom", kw(headroom)], ["Load (forecast)", kw(load)], ["PV (forecast)", kw(pv)],
      ["Batteries (+ discharge)", kw(battery)], ["Edges online", `${online} / ${state.cabinets.size}`],
    ];
    $("site-values").replaceChildren(...values.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const span = site.grid_import_limit_kw + site.grid_export_limit_kw || 1;
    const pos = (v) => `${(100 * (v + site.grid_export_limit_kw)) / span}%`;
    const clamp = (v) => Math.max(-site.grid_export_limit_kw, Math.min(site.grid_import_limit_kw, v));
    const gauge = h("div", { class: "gauge", title: "grid power between the export (left) and import (right) limits" },
      h("div", { class: "zero", style: `left:${pos(0)}` }),
      grid === null ? null : h("div", { class: "bar", style: grid >= 0 ? `left:${pos(0)};width:calc(${pos(clamp(grid))} - ${pos(0)})` : `left:${pos(clamp(grid))};width:calc(${pos(0)} - ${pos(clamp(grid))})` }),
      expected === null ? null : h("div", { class: "expect", style: `left:${pos(clamp(expected))}` }),
      h("span", { class: "lbl", style: "left:0" }, `−${site.grid_export_limit_kw.toFixed(0)}`),
      h("span", { class: "lbl", style: "right:0" }, `+${site.grid_import_limit_kw.toFixed(0)} kW`));
    $("grid-gauge").replaceChildren(gauge);
  }

  // -------------------------------------------------------------------------------------- day chart

  function loadDaySoon() {
    if (state.dayTimer) return;
    state.dayTimer = setTimeout(() => { state.dayTimer = null; loadDay(); }, 300);
  }

  async function loadDay() {
    const answer = await api("/api/v1/console/day").catch(() => null);
    if (!answer || !answer.ok) return;
    state.day = answer.body;
    if (answer.body.now) state.now = ms(answer.body.now);
    renderDay();
    renderSiteNow();
    if (answer.body.latest_plan) mark("ems:day-rendered");
  }

  let lastActualAt = -Infinity;
  function recordActual(id, t) { // live points between the stored samples: every cabinet at once
    const day = state.day;
    if (!day || !day.actual) return;
    const at = ms(t.at);
    if (at - lastActualAt < 60000) return;
    lastActualAt = at;
    for (const c of state.cabinets.values()) {
      const series = day.actual[c.cabinet_id];
      if (!series || !c.telemetry) continue;
      series.at.push(t.at);
      series.power_kw.push(c.telemetry.active_power_kw);
      series.soc_pct.push(c.telemetry.soc_pct);
    }
    renderDaySoon();
  }

  let dayRenderPending = false;
  function renderDaySoon() {
    if (dayRenderPending) return;
    dayRenderPending = true;
    setTimeout(() => { dayRenderPending = false; renderDay(); }, 1000);
  }

  function planSeries(plan, pick) {
    if (!plan) return [];
    const start = ms(plan.start);
    const step = plan.interval_minutes * 60000;
    return pick(plan).map((v, i) => [start + i * step, v]);
  }

  function sum(lists) {
    if (!lists.length) return [];
    return lists[0].map((_, i) => lists.reduce((acc, l) => acc + (l[i] || 0), 0));
  }

  function siteActual(day, key, weights) { // only times at which every cabinet has a value
    const count = Object.keys(day.actual).length;
    const byTime = new Map();
    for (const [id, s] of Object.entries(day.actual)) {
      s.at.forEach((at, i) => {
        const t = Math.round(ms(at) / 60000) * 60000;
        const acc = byTime.get(t) || { v: 0, w: 0, n: 0 };
        const w = weights ? weights[id] : 1;
        acc.v += s[key][i] * w; acc.w += w; acc.n += 1;
        byTime.set(t, acc);
      });
    }
    return [...byTime.entries()].filter(([, a]) => a.n === count).sort((a, b) => a[0] - b[0]).map(([t, a]) => [t, weights ? a.v / a.w : a.v]);
  }

  function renderDay() {
    const day = state.day;
    const box = $("plan-chart");
    if (!day || !day.upload) {
      box.setAttribute("data-plan-id", "");
      box.replaceChildren(h("p", { class: "muted" }, "No day-ahead upload yet."));
      $("soc-chart").textContent = "";
      return;
    }
    const scope = $("chart-scope").value;
    const up = day.upload;
    const t0 = ms(up.start);
    const step = up.interval_minutes * 60000;
    const t1 = t0 + step * up.load_kw.length;
    const prices = up.import_price_per_kwh.map((v, i) => [t0 + i * step, v]);
    const capacity = {};
    for (const c of state.cabinets.values()) capacity[c.cabinet_id] = c.capacity_kwh;
    const power = (plan) => (scope
      ? planSeries(plan, (p) => (p.cabinets[scope] ? p.cabinets[scope].setpoint_kw : []))
      : planSeries(plan, (p) => sum(Object.values(p.cabinets).map((c) => c.setpoint_kw))));
    const soc = (plan) => (scope
      ? planSeries(plan, (p) => (p.cabinets[scope] ? p.cabinets[scope].soc_pct : []))
      : planSeries(plan, (p) => {
        const ids = Object.keys(p.cabinets);
        const total = ids.reduce((a, id) => a + (capacity[id] || 1), 0);
        return p.cabinets[ids[0]].soc_pct.map((_, i) => ids.reduce((a, id) => a + p.cabinets[id].soc_pct[i] * (capacity[id] || 1), 0) / total);
      }));
    // SoC is at interval end: shift the points by one interval.
    const atEnd = (points) => points.map(([t, v]) => [t + step, v]);
    const actualPower = scope
      ? (day.actual[scope] ? day.actual[scope].at.map((a, i) => [ms(a), day.actual[scope].power_kw[i]]) : [])
      : siteActual(day, "power_kw", null);
    const actualSoc = scope
      ? (day.actual[scope] ? day.actual[scope].at.map((a, i) => [ms(a), day.actual[scope].soc_pct[i]]) : [])
      : siteActual(day, "soc_pct", capacity);
    // Re-plans: uploads and manual ones as lines, the scheduled ones as ticks on the top edge.
    const markers = day.plans.filter((p, i) => i > 0)
      .map((p) => ({ t: ms(p.stored_at), title: `${p.plan_id} (${p.trigger})`, tick: p.trigger === "schedule" }));
    const latest = day.latest_plan;
    const dayahead = day.dayahead_plan;
    box.setAttribute("data-plan-id", latest ? latest.plan_id : "");
    $("plan-info").textContent = latest
      ? `plan ${latest.plan_id} (${latest.trigger}, ${latest.status}); ${day.plans.length} plan(s) for ${up.upload_id}`
      : `upload ${up.upload_id}: no plan yet`;
    const series = [
      { points: prices, color: "var(--price)", step: true, axis: "right", width: 1, name: "import price" },
      { points: power(dayahead), color: "var(--dayahead)", step: true, dash: "4 3", name: "day-ahead plan" },
      { points: power(latest), color: "var(--latest)", step: true, width: 2, name: "latest plan" },
      { points: actualPower, color: "var(--actual)", name: "actual" },
    ];
    if (!scope) series.push({ points: planSeries(latest, (p) => p.grid_kw), color: "var(--grid)", step: true, width: 1, name: "planned grid" });
    Charts.timeChart(box, { t0, t1, height: 210, series, markers, now: state.now, leftLabel: "kW (+ discharge)", rightLabel: "price/kWh",
      title: `${scope || "site"}: power plan vs actual` });
    Charts.timeChart($("soc-chart"), { t0, t1, height: 120, markers, now: state.now, leftLabel: "SoC %",
      series: [
        { points: atEnd(soc(dayahead)), color: "var(--dayahead)", dash: "4 3", name: "day-ahead SoC" },
        { points: atEnd(soc(latest)), color: "var(--latest)", width: 2, name: "planned SoC" },
        { points: actualSoc, color: "var(--actual)", name: "actual SoC" },
      ], title: `${scope || "site"}: SoC planned vs actual` });
  }

  // ---------------------------------------------------------------------------------------- events list

  async function loadEvents() {
    const params = new URLSearchParams({ limit: "200" });
    if ($("event-kind").value) params.append("kind", $("event-kind").value);
    if ($("event-cabinet").value) params.append("cabinet_id", $("event-cabinet").value);
    const answer = await api(`/api/v1/events?${params}`).catch(() => null);
    if (!answer || !answer.ok) return;
    state.events = answer.body.map((e) => Object.assign({ type: e.type, at: e.at, cabinet_id: e.cabinet_id }, e.data));
    renderEvents();
  }

  function addLiveEvent(event) {
    if (!KINDS.includes(event.type)) return;
    const kind = $("event-kind").value;
    const cab = $("event-cabinet").value;
    if ((kind && event.type !== kind) || (cab && event.cabinet_id !== cab)) return;
    state.events.unshift(event);
    if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
    if (!eventsRenderPending) {
      eventsRenderPending = true;
      requestAnimationFrame(() => { eventsRenderPending = false; renderEvents(); });
    }
  }
  let eventsRenderPending = false;

  function describe(e) {
    switch (e.type) {
      case "cabinet_state": return `${e.previous || "–"} → ${e.state}${e.interlock_reason ? `: ${e.interlock_reason}` : ""}`;
      case "edge_connected": return "OPC UA session up";
      case "edge_disconnected": return "OPC UA session lost";
      case "upload": return `${e.upload_id} (${e.format}, ${e.steps} × ${e.interval_minutes} min from ${e.start})`;
      case "upload_superseded": return `${e.upload_id} superseded by ${e.superseded_by}`;
      case "plan": return `${e.plan_id} (${e.trigger}, ${e.status})${e.violations && e.violations.length ? `: ${e.violations.length} violation(s)` : ""}`;
      case "run": return `${e.trigger}: ${e.message}`;
      case "push": return `${e.plan_id}: ${e.status}${e.message ? ` (${e.message})` : ""}`;
      case "reset": return `asked by ${e.requested_by}: ${e.accepted === null ? "not sent" : e.accepted ? "accepted" : "refused"}: ${e.message}`;
      default: return "";
    }
  }

  function isBad(e) {
    return (e.type === "cabinet_state" && ["tripped", "offline", "holding"].includes(e.state)) || e.type === "edge_disconnected"
      || (e.type === "push" && !e.ok) || (e.type === "run" && !e.ok && !e.skipped) || (e.type === "reset" && !e.accepted);
  }

  function renderEvents() {
    $("events").replaceChildren(...state.events.map((e) => h("li", { class: `kind-${e.type}${isBad(e) ? " bad" : ""}`, "data-type": e.type },
      h("span", {}, e.at.replace("T", " ").slice(0, 19)), h("span", {}, e.type), h("span", {}, e.cabinet_id || ""), h("span", {}, describe(e)))));
  }

  // --------------------------------------------------------------------------------------- actions

  function showResult(text, ok, problems) {
    const box = $("action-result");
    box.replaceChildren(h("div", { class: ok ? "ok" : "bad" }, text));
    if (problems && problems.length) {
      box.appendChild(h("ul", { class: "problems" }, ...problems.map((p) => h("li", {}, p.location ? `${p.location}: ${p.message}` : p.message))));
    }
  }

  async function upload(file) {
    const csv = /\.csv$/i.test(file.name) || file.type === "text/csv";
    showResult(`Uploading ${file.name}…`, true);
    const body = await file.text();
    const answer = await api("/api/v1/day-ahead?wait=false", {
      method: "POST", body, headers: { "Content-Type": csv ? "text/csv" : "application/json" },
    }).catch((err) => ({ ok: false, status: 0, body: { detail: String(err) } }));
    if (answer.ok) {
      showResult(`Accepted: upload ${answer.body.upload.upload_id}; planning ${answer.body.planning}.`, true);
    } else {
      showResult(`Refused (${answer.status}): ${answer.body ? answer.body.detail : ""}`, false, answer.body && answer.body.problems);
    }
  }

  async function optimize() {
    showResult("Re-optimizing…", true);
    const answer = await api("/api/v1/optimize", { method: "POST" });
    const b = answer.body || {};
    showResult(`${answer.ok ? "Done" : `Not done (${answer.status})`}: ${b.message || b.detail || ""}`, answer.ok);
  }

  function wire() {
    $("token-input").value = state.token ? "••••••••" : "";
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("token-input").value.trim();
      if (value && value !== "••••••••") { state.token = value; sessionStorage.setItem(TOKEN_KEY, value); }
      $("token-input").value = state.token ? "••••••••" : "";
      start();
    });
    $("token-clear").addEventListener("click", () => {
      state.token = ""; sessionStorage.removeItem(TOKEN_KEY); $("token-input").value = ""; start();
    });
    const drop = $("drop");
    drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault(); drop.classList.remove("over");
      if (ev.dataTransfer.files.length) upload(ev.dataTransfer.files[0]);
    });
    $("upload-file").addEventListener("change", (ev) => {
      const input = ev.target;
      if (input.files.length) upload(input.files[0]);
      input.value = "";
    });
    $("optimize").addEventListener("click", optimize);
    $("chart-scope").addEventListener("change", renderDay);
    const kinds = $("event-kind");
    for (const k of KINDS) kinds.appendChild(h("option", { value: k }, k));
    kinds.addEventListener("change", loadEvents);
    $("event-cabinet").addEventListener("change", loadEvents);
    window.addEventListener("resize", () => renderDaySoon());
  }

  wire();
  start();
})();
