// The dashboard: the last hour at a glance (cards, calls per minute, reply-latency distribution) and
// the call records with filters and search (server-side: /admin/search). Active calls are app.js's.
"use strict";

(() => {
  const { el, svg, api, Forbidden, bindTokenForm, dateTime, duration, ms } = GW;
  const SUMMARY_MS = 5000;
  const PAGE = 25;
  let offset = 0;
  let filters = {};
  let plansShown = "";

  // --- cards and charts -------------------------------------------------------------------------
  function card(label, value, hint, cls, key) {
    return el("div", { class: "card" + (cls ? " " + cls : ""), "data-card": key },
      el("div", { class: "label" }, label), el("div", { class: "value" }, value),
      hint ? el("div", { class: "hint" }, hint) : null);
  }

  function renderCards(doc) {
    const r = doc.records;
    const cards = [card("Active calls", String(doc.active_calls), "on this instance", doc.active_calls ? "live" : "", "active")];
    if (r) {
      const errors = r.events.failure + r.events.connect_failed + r.tool_errors;
      cards.push(
        card("Calls", String(r.calls), "last hour", "", "calls"),
        card("Reply latency p50", ms(r.latency.p50_ms), r.latency.count + " replies", "", "p50"),
        card("Reply latency p95", ms(r.latency.p95_ms), "max " + ms(r.latency.max_ms), "", "p95"),
        card("Fallbacks", String(r.events.fallback), "Gemini unreachable", r.events.fallback ? "bad" : "", "fallbacks"),
        card("Errors", String(errors),
          r.events.failure + " call · " + r.events.connect_failed + " connect · " + r.tool_errors + " tool",
          errors ? "bad" : "", "errors"),
        card("Reconnects", String(r.events.reconnect), r.events.go_away + " goAway · " + r.events.barge_in + " barge-ins", "", "reconnects"),
      );
    } else {
      cards.push(card("Call records", "off", "GATEWAY_RECORDS=0", "", "records"));
    }
    document.getElementById("cards").replaceChildren(...cards);
  }

  // A bar chart in plain SVG, sized by its viewBox (it scales with the panel).
  function bars(target, values, labels, cls, title) {
    const chart = document.getElementById(target);
    const W = Math.max(300, Math.round(chart.clientWidth)), H = 150, left = 28, bottom = 20, top = 8;
    const max = Math.max(1, ...values);
    const nice = max <= 5 ? max : Math.ceil(max / 5) * 5;
    const bw = (W - left) / Math.max(1, values.length);
    chart.setAttribute("viewBox", "0 0 " + W + " " + H);
    const nodes = [];
    for (const f of [0, 0.5, 1]) {
      const y = top + (H - bottom - top) * (1 - f);
      nodes.push(svg("line", { class: "grid-line", x1: left, x2: W, y1: y, y2: y }));
      nodes.push(svg("text", { class: "axis", x: left - 4, y: y + 3, "text-anchor": "end" }, Math.round(nice * f)));
    }
    values.forEach((v, i) => {
      const h = ((H - bottom - top) * v) / nice;
      const rect = svg("rect", { class: "bar " + cls, x: (left + i * bw + bw * 0.12).toFixed(1), y: (H - bottom - h).toFixed(1),
        width: (bw * 0.76).toFixed(1), height: Math.max(0, h).toFixed(1), rx: 1.5, "data-value": v },
        svg("title", {}, title(i, v)));
      nodes.push(rect);
      if (labels[i]) {
        const anchor = i === values.length - 1 ? "end" : i === 0 ? "start" : "middle";
        const at = anchor === "end" ? W : anchor === "start" ? left + i * bw : left + i * bw + bw / 2;
        nodes.push(svg("text", { class: "tick", x: at.toFixed(1), y: H - 5, "text-anchor": anchor }, labels[i]));
      }
    });
    chart.replaceChildren(...nodes);
  }

  function renderCharts(doc) {
    const r = doc.records;
    if (!r) return;
    const n = r.calls_per_minute.length;
    bars("calls-chart", r.calls_per_minute,
      r.calls_per_minute.map((_, i) => ((n - i) % 15 === 0 ? "−" + (n - i) + " min" : i === n - 1 ? "now" : "")),
      "calls", (i, v) => v + " calls, " + (n - i) + " min ago");
    const edges = r.latency.edges_ms;
    const labels = r.latency.buckets.map((_, i) => (i === edges.length ? "≥" + ms(edges[i - 1]) : "<" + ms(edges[i])));
    bars("latency-chart", r.latency.buckets, labels, "latency", (i, v) => v + " replies " + labels[i]);
  }

  let lastSummary = null;
  window.addEventListener("resize", () => { if (lastSummary) renderCharts(lastSummary); });

  async function refreshSummary() {
    try {
      const doc = lastSummary = await api("/admin/summary");
      renderCards(doc);
      renderCharts(doc);
    } catch (err) {
      if (!(err instanceof Forbidden)) document.getElementById("cards").replaceChildren(
        el("p", { class: "empty" }, "Summary unavailable: " + err.message));
    }
  }

  // --- records: filters, search, pages ------------------------------------------------------------
  // A date picked here is a day in the browser's time zone: sent as Unix seconds (the server's zone may differ).
  function day(value, next) {
    if (!value) return "";
    const d = new Date(value + "T00:00:00");
    if (next) d.setDate(d.getDate() + 1);
    return String(d.getTime() / 1000);
  }

  function readFilters() {
    const value = (id) => document.getElementById(id).value.trim();
    return { q: value("f-q"), number: value("f-number"), dialplan: value("f-dialplan"),
      since: day(value("f-since"), false), until: day(value("f-until"), true), ended_by: value("f-ended-by") };
  }

  function fillSelect(id, values) {
    const select = document.getElementById(id);
    const current = select.value;
    select.replaceChildren(el("option", { value: "" }, "any"), ...values.map((v) => el("option", { value: v }, v)));
    select.value = values.includes(current) ? current : "";
  }

  function renderRecords(doc) {
    const body = document.getElementById("records");
    const shown = doc.dialplans.join("\n") + "|" + doc.ended_by.join("\n");
    if (shown !== plansShown) {
      plansShown = shown;
      fillSelect("f-dialplan", doc.dialplans);
      fillSelect("f-ended-by", doc.ended_by);
    }
    const filtered = Object.values(filters).some(Boolean);
    document.getElementById("records-count").textContent = "(" + doc.total + (filtered ? " matching" : "") + ")";
    if (!doc.records.length) {
      body.replaceChildren(el("tr", {}, el("td", { colSpan: 8, class: "empty" },
        filtered ? "No call matches these filters." : "No calls recorded yet.")));
    } else {
      body.replaceChildren(...doc.records.map((r) => {
        const href = "/admin/calls/" + encodeURIComponent(r.call_id);
        const row = el("tr", { class: "record", "data-call-id": r.call_id, tabindex: 0 },
          el("td", {}, dateTime(r.started_at)),
          el("td", {}, el("a", { class: "sid", href }, r.call_id)),
          el("td", {}, r.from), el("td", {}, r.to), el("td", {}, r.dialplan),
          el("td", {}, r.ended_at ? duration(r.ended_at - r.started_at) : "running"),
          el("td", {}, r.turn_count),
          el("td", {}, r.ended_by || "–"));
        row.addEventListener("click", (e) => { if (!(e.target instanceof HTMLAnchorElement)) location.href = href; });
        row.addEventListener("keydown", (e) => { if (e.key === "Enter") location.href = href; });
        return row;
      }));
    }
    const last = Math.min(doc.total, offset + doc.records.length);
    document.getElementById("page-info").textContent = doc.total ? (offset + 1) + "–" + last + " of " + doc.total : "";
    document.getElementById("page-prev").disabled = offset === 0;
    document.getElementById("page-next").disabled = last >= doc.total;
  }

  // Searches overlap (the periodic refresh, a filter submitted meanwhile) and may answer out of order:
  // only the newest one's answer is shown, so a slow unfiltered answer never replaces a filtered one.
  let searches = 0;

  async function refreshRecords() {
    const params = new URLSearchParams({ limit: PAGE, offset });
    for (const [key, value] of Object.entries(filters)) if (value) params.set(key, value);
    const mine = ++searches;
    try {
      const doc = await api("/admin/search?" + params);
      if (mine === searches) renderRecords(doc);
    } catch (err) {
      if (mine === searches && !(err instanceof Forbidden)) {
        document.getElementById("records").replaceChildren(el("tr", {}, el("td", { colSpan: 8, class: "empty" },
          "Records unavailable: " + err.message)));
      }
    }
  }

  document.getElementById("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    filters = readFilters();
    offset = 0;
    refreshRecords();
  });
  document.getElementById("f-clear").addEventListener("click", () => {
    document.getElementById("filters").reset();
    filters = {};
    offset = 0;
    refreshRecords();
  });
  document.getElementById("page-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); refreshRecords(); });
  document.getElementById("page-next").addEventListener("click", () => { offset += PAGE; refreshRecords(); });

  function refreshAll() {
    refreshSummary();
    refreshRecords();
  }
  bindTokenForm(refreshAll);
  refreshAll();
  setInterval(refreshAll, SUMMARY_MS);
})();
