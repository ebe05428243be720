// The status page's trends: polls /status/trends and draws, per dependency, requests/s,
// error rate and p95 latency (uPlot, vendored: no CDN), the breaker state as a coloured
// band, the share of its bulkhead in use (a chart once it has one: only the dependencies
// with an admission limit do), and the level timeline with one line per level of what
// users are living with.
// Every value goes in with textContent; times show with date and time zone.
"use strict";
(function () {
  const STATE_COLOURS = {
    closed: "#2fbf71", half_open: "#e5c039", open: "#e5484d",
    forced_open: "#b03cc8", disabled: "#6b7480",
  };
  const LEVEL_COLOURS = ["#2fbf71", "#e5c039", "#f08c2e", "#e5484d", "#b03cc8"];
  const charts = {};
  const $ = (sel) => document.querySelector(sel);

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function when(t) {
    return new Date(t * 1000).toLocaleString(undefined, {
      year: "numeric", month: "short", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
    });
  }

  function band(canvas, times, values, colour) {
    const w = canvas.clientWidth || 600;
    const h = canvas.clientHeight || 14;
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    if (times.length < 1) return;
    const t0 = times[0];
    const span = Math.max(times[times.length - 1] - t0, 1);
    for (let i = 0; i < times.length; i++) {
      const x = ((times[i] - t0) / span) * (w - 1);
      const next = i + 1 < times.length ? ((times[i + 1] - t0) / span) * (w - 1) : w;
      ctx.fillStyle = colour(values[i]);
      ctx.fillRect(Math.floor(x), 0, Math.max(1, Math.ceil(next - x)), h);
    }
  }

  function chartOpts(title, label, width) {
    return {
      title: title, width: width, height: 140,
      scales: { x: { time: true } },
      axes: [
        { stroke: "#8d97a5", grid: { stroke: "#2a313b" } },
        { stroke: "#8d97a5", grid: { stroke: "#2a313b" }, size: 50 },
      ],
      series: [
        { value: (u, v) => (v == null ? "—" : when(v)) },
        { label: label, stroke: "#4ea1ff", width: 2, fill: "rgba(78,161,255,0.15)", spanGaps: false },
      ],
      legend: { show: true },
    };
  }

  function dependencyCard(name) {
    const card = el("div", { class: "trend-card", "data-testid": "trend-" + name });
    card.append(el("h3", {}, name));
    const slots = {};
    for (const [key, title] of [["rps", "requests/s"], ["error_rate", "error rate (%)"], ["p95_ms", "p95 latency (ms)"]]) {
      const slot = el("div", { class: "trend-chart", "data-testid": "chart-" + name + "-" + key });
      card.append(slot);
      slots[key] = { slot: slot, title: title };
    }
    card.append(el("div", { class: "trend-label" }, "breaker state"));
    const stateBand = el("canvas", { class: "band", "data-testid": "band-" + name });
    card.append(stateBand);
    const inUse = el("div", { class: "trend-label", "data-testid": "in-use-" + name });
    card.append(inUse);
    return { card: card, slots: slots, band: stateBand, inUse: inUse };
  }

  function inUseChart(c, name) {
    // added below the label the first time the dependency reports a bulkhead
    const slot = el("div", { class: "trend-chart", "data-testid": "chart-" + name + "-in_use" });
    c.card.append(slot);
    c.slots.in_use = { slot: slot, title: "bulkhead in use (%)" };
  }

  function draw(doc) {
    const root = $("[data-testid=trends]");
    const width = Math.max(260, Math.min(560, (root.clientWidth || 600) - 30));
    const deps = doc.dependencies || {};
    for (const [name, s] of Object.entries(deps)) {
      let c = charts[name];
      if (!c) {
        c = charts[name] = dependencyCard(name);
        root.append(c.card);
      }
      if (!c.slots.in_use && (s.in_use || []).some((v) => v != null)) inUseChart(c, name);
      for (const [key, { slot, title }] of Object.entries(c.slots)) {
        let ys = s[key] || [];
        if (key === "error_rate" || key === "in_use") ys = ys.map((v) => (v == null ? null : v * 100));
        const data = [s.t || [], ys];
        if (!slot.plot) slot.plot = new uPlot(chartOpts(title, title, width), data, slot);
        else slot.plot.setData(data);
      }
      band(c.band, s.t || [], s.state || [], (v) => STATE_COLOURS[v] || "#6b7480");
      const last = (s.in_use || []).at(-1);
      c.inUse.textContent = "bulkhead in use: " + (last == null ? "n/a" : Math.round(last * 100) + " %");
    }
    const level = doc.level || { t: [], value: [] };
    band($("[data-testid=level-band]"), level.t, level.value, (v) => LEVEL_COLOURS[v] || "#6b7480");
    const list = $("[data-testid=level-lines]");
    list.replaceChildren();
    (doc.levels || []).forEach((name, i) => {
      const li = el("li", {});
      const sw = el("span", { class: "swatch", "data-level": name.toUpperCase() });
      li.append(sw, el("span", { class: "level-name" }, name), document.createTextNode(": " + (doc.level_impacts || {})[name]));
      list.append(li);
    });
    const t = level.t || [];
    $("[data-testid=trends-range]").textContent = t.length
      ? "from " + when(t[0]) + " to " + when(t[t.length - 1])
      : "no sample yet";
  }

  async function poll() {
    try {
      const r = await fetch("status/trends", { cache: "no-store" });
      if (r.ok) draw(await r.json());
    } catch (e) {
      // the main script shows the lost connection; try again on the next tick
    }
  }

  function start() {
    if (typeof uPlot === "undefined" || !$("[data-testid=trends]")) return;
    poll();
    setInterval(poll, 2000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
