// The dashboard page: totals, charts, top categories, inventory and recent events,
// all fetched from the JSON API and rendered with textContent.
"use strict";

(() => {
  const { el, api, fmtTime, fmtMs, actionBadge, categoryChips, breakable, clear } = LW;
  const PAGE = 50;
  const ACTION_COLORS = { block: "#d64545", redact: "#8e5bd6", log: "#e0a030", allow: "#3d9a5f" };
  const PALETTE = ["#2f6fd6", "#d64545", "#e0a030", "#3d9a5f", "#8e5bd6", "#1aa3a3", "#c4569e", "#7a7a7a", "#b8860b", "#4b5fa8"];
  const $ = (id) => document.getElementById(id);
  const state = { offset: 0, charts: {} };
  const FILTERS = ["range", "action", "category", "endpoint"];

  // Filters live in the query string, so a reload or a shared link keeps them.
  function readFilters() {
    const q = new URLSearchParams(location.search);
    for (const f of FILTERS) {
      const v = q.get(f);
      if (v === null) continue;
      const sel = $(`f-${f}`);
      if (![...sel.options].some((o) => o.value === v)) sel.append(el("option", { value: v }, v));
      sel.value = v;
    }
  }

  function filters() {
    const out = {};
    for (const f of FILTERS) {
      const v = $(`f-${f}`).value;
      if (v) out[f] = v;
    }
    return out;
  }

  function writeFilters() {
    const q = new URLSearchParams(filters());
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
  }

  function setOptions(sel, values, labelOf) {
    const current = sel.value;
    const keep = new Set(values);
    if (current) keep.add(current);
    clear(sel);
    sel.append(el("option", { value: "" }, "any"));
    for (const v of [...keep].sort()) sel.append(el("option", { value: v }, labelOf ? labelOf(v) : v));
    sel.value = current;
  }

  function renderTotals(t) {
    const box = $("totals");
    clear(box);
    const cards = [
      ["screened", "Screened", t.screened],
      ["blocked", "Blocked", t.blocked],
      ["redacted", "Redacted", t.redacted],
      ["logged", "Logged", t.logged],
      ["allowed", "Allowed", t.allowed],
      ["not_scored", "Not scored (deadline)", t.not_scored],
      ["errors", "Detector errors", t.errors],
      ["unparsed", "Unreadable bodies", t.unparsed],
      ["responses", "Responses screened", t.responses],
      ["responses_acted", "Responses blocked/redacted/logged", t.responses_acted],
    ];
    for (const [key, label, value] of cards) {
      box.append(el("div", { class: `card ${key}`, "data-total": key }, el("div", { class: "value" }, value), el("div", { class: "label" }, label)));
    }
  }

  function bucketLabels(series) {
    const b = series.bucket_s || 60;
    return series.buckets.map((ts) => {
      const s = fmtTime(ts);
      return b >= 86400 ? s.slice(0, 10) : b >= 3600 ? s.slice(5, 16) : s.slice(11, b < 60 ? 19 : 16);
    });
  }

  function drawChart(id, type, labels, datasets) {
    if (typeof Chart === "undefined") return; // charting library missing: tables still work
    const existing = state.charts[id];
    if (existing) {
      existing.data.labels = labels;
      existing.data.datasets = datasets;
      existing.update("none");
      return;
    }
    state.charts[id] = new Chart($(id), {
      type,
      data: { labels, datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
        scales: {
          x: { stacked: type === "bar", ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 12 } },
          y: { stacked: type === "bar", beginAtZero: true, ticks: { precision: 0 } },
        },
      },
    });
  }

  function renderCharts(series) {
    const labels = bucketLabels(series);
    const order = ["block", "redact", "log", "allow"];
    const actions = Object.keys(series.by_action).sort((a, b) => order.indexOf(a) - order.indexOf(b));
    drawChart("chart-action", "bar", labels, actions.map((a) => ({
      label: a, data: series.by_action[a], backgroundColor: ACTION_COLORS[a] || "#7a7a7a", stack: "actions",
    })));
    // Stacked bars: equal series stay visible (overlapping lines would hide each other).
    drawChart("chart-category", "bar", labels, Object.keys(series.by_category).map((c, i) => ({
      label: c, data: series.by_category[c], backgroundColor: PALETTE[i % PALETTE.length], stack: "categories",
    })));
  }

  function renderTop(top) {
    const body = $("top").tBodies[0];
    clear(body);
    if (!top.length) body.append(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "no detections in this range")));
    for (const c of top) {
      const key = `${c.kind}:${c.category}`;
      const link = el("a", { href: `/?${new URLSearchParams({ ...filters(), category: key })}` }, LW.label(c.kind, c.category));
      link.addEventListener("click", (e) => { e.preventDefault(); select("category", key); });
      body.append(el("tr", {}, el("td", {}, el("span", { class: `chip ${c.kind}` }, c.kind)), el("td", {}, link), el("td", { class: "num" }, c.count)));
    }
    setOptions($("f-category"), top.map((c) => `${c.kind}:${c.category}`));
  }

  function renderEndpoints(eps) {
    const body = $("endpoints").tBodies[0];
    clear(body);
    if (!eps.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no LLM endpoints seen yet")));
    for (const e of eps) {
      const link = el("a", { href: `/?${new URLSearchParams({ ...filters(), endpoint: e.endpoint })}` }, breakable(`${e.method} ${e.endpoint}`));
      link.addEventListener("click", (ev) => { ev.preventDefault(); select("endpoint", e.endpoint); });
      const conf = e.confirmed === null ? "–" : e.confirmed ? "yes" : "no";
      body.append(el("tr", {}, el("td", {}, link), el("td", {}, e.format || "–"), el("td", {}, fmtTime(e.first_seen)),
        el("td", {}, fmtTime(e.last_seen)), el("td", { class: "num" }, e.request_count), el("td", {}, conf)));
    }
    setOptions($("f-endpoint"), eps.map((e) => e.endpoint));
  }

  function renderRateLimits(rows) {
    const body = $("ratelimits").tBodies[0];
    clear(body);
    if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "no rate-limit decisions in this range")));
    for (const r of rows) {
      body.append(el("tr", {}, el("td", { class: "mono" }, r.rule), el("td", { class: "mono" }, r.key.slice(0, 12)),
        el("td", {}, r.unit), el("td", { class: "num" }, r.charged), el("td", { class: "num" }, r.requests),
        el("td", { class: "num" }, r.blocked), el("td", { class: "num" }, `${r.remaining} / ${r.limit} per ${r.period} s`),
        el("td", { class: "nowrap" }, fmtTime(r.last_ts))));
    }
  }

  function renderEvents(events) {
    const body = $("events").tBodies[0];
    clear(body);
    if (!events.length) body.append(el("tr", {}, el("td", { colspan: 10, class: "muted" }, "no events match")));
    for (const e of events) {
      const tr = el("tr", { "data-event-id": e.id, class: `action-${e.action || "allow"}` },
        el("td", { class: "nowrap" }, fmtTime(e.ts)),
        el("td", {}, breakable(`${e.method} ${e.endpoint}`)),
        el("td", {}, e.status === "response" ? `${e.format} (response)` : e.format || e.status),
        el("td", {}, e.model || "–"),
        el("td", {}, actionBadge(e.action)),
        el("td", { class: "mono nowrap" }, e.rule || "–"),
        el("td", {}, categoryChips(e.fields)),
        el("td", { class: "num" }, fmtMs(e.total_ms)),
        el("td", {}, (e.not_scored || []).join(", ") || "–"),
        el("td", {}, el("a", { href: `/event/${Number(e.id)}`, class: "details" }, "details")));
      body.append(tr);
    }
    $("prev").disabled = state.offset === 0;
    $("next").disabled = events.length < PAGE;
    $("page").textContent = events.length ? `${state.offset + 1}–${state.offset + events.length}` : "";
  }

  function select(name, value) {
    $(`f-${name}`).value = value;
    state.offset = 0;
    changed();
  }

  async function refresh() {
    const f = filters();
    const range = f.range ? { range: f.range } : {};
    try {
      const [stats, eps, evs, rls] = await Promise.all([
        api(`/api/stats?${new URLSearchParams(range)}`),
        api("/api/endpoints"),
        api(`/api/events?${new URLSearchParams({ ...f, limit: PAGE, offset: state.offset })}`),
        api(`/api/ratelimits?${new URLSearchParams(range)}`),
      ]);
      renderTotals(stats.totals);
      renderCharts(stats.series);
      renderTop(stats.top_categories);
      renderEndpoints(eps.endpoints);
      renderEvents(evs.events);
      renderRateLimits(rls.consumers);
      $("status").textContent = `updated ${fmtTime(stats.now).slice(11)}`;
      $("status").classList.remove("error");
    } catch (err) {
      $("status").textContent = `cannot load data: ${err.message}`;
      $("status").classList.add("error");
    }
  }

  function changed() {
    writeFilters();
    refresh();
  }

  readFilters();
  for (const f of FILTERS) $(`f-${f}`).addEventListener("change", () => { state.offset = 0; changed(); });
  $("filters").addEventListener("submit", (e) => e.preventDefault());
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); refresh(); });
  $("next").addEventListener("click", () => { state.offset += PAGE; refresh(); });
  setInterval(() => { if ($("f-live").checked && !document.hidden) refresh(); }, 5000);
  LW.loadNames().then(refresh);
})();
