/* Plain SVG time charts for the console (no library). */
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";

  function el(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  function range(series, axis) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of series) {
      if ((s.axis || "left") !== axis) continue;
      for (const [, v] of s.points) {
        if (v === null || !Number.isFinite(v)) continue;
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
    }
    if (!Number.isFinite(lo)) return null;
    if (axis === "left") { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
    if (hi - lo < 1e-9) { hi += 1; lo -= axis === "left" ? 1 : 0; }
    const pad = (hi - lo) * 0.06;
    return [lo - (lo < 0 ? pad : 0), hi + pad];
  }

  /* [lo, hi, step] rounded outwards to a 1-2-5 step, about 4 steps. */
  function nice([lo, hi]) {
    const raw = (hi - lo) / 4;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw) || raw;
    return [Math.floor(lo / step) * step, Math.ceil(hi / step) * step, step];
  }

  function path(points, x, y, step, endT) {
    let d = "";
    let pen = false;
    points.forEach(([t, v], i) => {
      if (v === null || !Number.isFinite(v)) { pen = false; return; }
      const px = x(t).toFixed(1);
      const py = y(v).toFixed(1);
      if (!pen) { d += `M${px},${py}`; pen = true; } else if (step) { d += `H${px}V${py}`; } else { d += `L${px},${py}`; }
      if (step) {
        const next = i + 1 < points.length ? points[i + 1][0] : endT;
        if (next !== undefined) d += `H${x(next).toFixed(1)}`;
      }
    });
    return d;
  }

  function hhmm(ms) {
    return new Date(ms).toISOString().slice(11, 16);
  }

  /* spec: {t0, t1 (ms), height, series: [{points: [[ms, value]], color, dash, width, step, axis, name}],
     markers: [{t, title}], now, leftLabel, rightLabel} */
  function timeChart(container, spec) {
    container.textContent = "";
    const width = Math.max(320, container.clientWidth || 600);
    const height = spec.height || 200;
    const m = { l: 44, r: 44, t: 16, b: 18 };
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" }, container);
    if (spec.title) el("title", {}, svg).textContent = spec.title;
    const span = Math.max(1, spec.t1 - spec.t0);
    const x = (t) => m.l + ((t - spec.t0) / span) * (width - m.l - m.r);
    const left = nice(range(spec.series, "left") || [0, 1]);
    const right = range(spec.series, "right");
    const yOf = ([lo, hi]) => (v) => height - m.b - ((v - lo) / (hi - lo)) * (height - m.t - m.b);
    const yl = yOf(left);
    const yr = right ? yOf(right) : null;
    const grid = el("g", { stroke: "#edf2f7" }, svg);
    for (let v = left[0]; v <= left[1] + left[2] / 2; v += left[2]) {
      el("line", { x1: m.l, x2: width - m.r, y1: yl(v), y2: yl(v) }, grid);
      el("text", { x: m.l - 4, y: yl(v) + 3, "text-anchor": "end" }, svg).textContent = String(Math.round(v));
    }
    for (let i = 0; i <= 4; i += 1) {
      if (right && yr) {
        const w = right[0] + ((right[1] - right[0]) * i) / 4;
        el("text", { x: width - m.r + 4, y: yr(w) + 3 }, svg).textContent = w.toFixed(3);
      }
    }
    if (left[0] < 0 && left[1] > 0) {
      el("line", { x1: m.l, x2: width - m.r, y1: yl(0), y2: yl(0), stroke: "#a0aec0" }, svg);
    }
    const hours = span / 3600000;
    const every = hours > 12 ? 3 : hours > 4 ? 1 : 0.25;
    const first = Math.ceil(spec.t0 / (every * 3600000)) * every * 3600000;
    for (let t = first; t <= spec.t1; t += every * 3600000) {
      el("line", { x1: x(t), x2: x(t), y1: m.t, y2: height - m.b, stroke: "#f1f3f6" }, grid);
      el("text", { x: x(t), y: height - 4, "text-anchor": "middle" }, svg).textContent = hhmm(t);
    }
    if (spec.leftLabel) el("text", { x: 2, y: 10 }, svg).textContent = spec.leftLabel;
    if (spec.rightLabel) el("text", { x: width - 2, y: 10, "text-anchor": "end" }, svg).textContent = spec.rightLabel;
    for (const marker of spec.markers || []) {
      const line = el("line", {
        x1: x(marker.t), x2: x(marker.t), y1: m.t - (marker.tick ? 6 : 0), y2: marker.tick ? m.t : height - m.b,
        stroke: "#b7791f", "stroke-dasharray": marker.tick ? "" : "2 3", class: "replan",
      }, svg);
      el("title", {}, line).textContent = marker.title;
    }
    for (const s of spec.series) {
      if (!s.points.length) continue;
      const y = s.axis === "right" && yr ? yr : yl;
      const p = el("path", {
        d: path(s.points, x, y, s.step, spec.t1),
        fill: "none",
        stroke: s.color,
        "stroke-width": s.width || 1.5,
        "stroke-dasharray": s.dash || "",
        class: s.name || "",
      }, svg);
      if (s.name) el("title", {}, p).textContent = s.name;
    }
    if (spec.now && spec.now >= spec.t0 && spec.now <= spec.t1) {
      el("line", { x1: x(spec.now), x2: x(spec.now), y1: m.t, y2: height - m.b, stroke: "#1d2330", class: "now" }, svg);
    }
    return svg;
  }

  return { timeChart };
})();
