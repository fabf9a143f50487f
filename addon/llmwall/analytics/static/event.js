// The drill-down page for one request: every detection outcome, timings, and the deciding rule.
"use strict";

(() => {
  const { el, api, fmtTime, fmtMs, actionBadge, categoryChips, breakable } = LW;
  const $ = (id) => document.getElementById(id);

  function kv(table, rows) {
    const body = table.tBodies[0];
    for (const [k, v] of rows) body.append(el("tr", {}, el("th", {}, k), el("td", {}, v)));
  }

  function fieldValue(v) {
    if (Array.isArray(v)) return v.length ? v.join(", ") : "[] (none)";
    if (v !== null && typeof v === "object") {
      return Object.entries(v).map(([k, s]) => `${k}: ${s}`).join(", ") || "{} (none)";
    }
    return String(v);
  }

  function render(e) {
    document.title = `llmwall · event ${e.id}`;
    $("title").textContent = `Event ${e.id} · ${fmtTime(e.ts)}`;
    kv($("summary"), [
      ["time", fmtTime(e.ts)],
      ["endpoint", breakable(`${e.method} ${e.host}${e.path_template}`)],
      ["format", e.format || "–"],
      ["model", e.model || "–"],
      ["status", e.status],
      ["screening time", `${fmtMs(e.total_ms)} ms`],
    ]);
    const matched = el("ul", { class: "rules" });
    for (const r of e.matched || []) {
      matched.append(el("li", { class: r === e.rule ? "deciding" : "" }, el("span", { class: "mono" }, r), r === e.rule ? " ← decided" : ""));
    }
    if (!(e.matched || []).length) matched.append(el("li", { class: "muted" }, "no rule matched"));
    const decision = [
      ["action", actionBadge(e.action)],
      ["deciding rule", el("span", { class: "mono", id: "deciding-rule" }, e.rule || "–")],
      ["matched rules", matched],
      ["categories", categoryChips(e.fields)],
    ];
    if ((e.redacted || []).length) decision.push(["redacted", e.redacted.join(", ")]);
    kv($("decision"), decision);

    const fbody = $("fields").tBodies[0];
    const names = Object.keys(e.fields || {}).sort();
    if (!names.length) fbody.append(el("tr", {}, el("td", { colspan: 2, class: "muted" }, "no detection fields")));
    for (const n of names) fbody.append(el("tr", {}, el("td", { class: "mono" }, n), el("td", {}, fieldValue(e.fields[n]))));

    const tbody = $("timings").tBodies[0];
    const dets = new Set([...Object.keys(e.timings_ms || {}), ...(e.not_scored || []), ...(e.errors || [])]);
    if (!dets.size) tbody.append(el("tr", {}, el("td", { colspan: 3, class: "muted" }, "no detectors ran")));
    for (const d of [...dets].sort()) {
      let outcome = "scored";
      let cls = "ok";
      if ((e.not_scored || []).includes(d)) { outcome = "not scored (deadline)"; cls = "warn"; }
      if ((e.errors || []).includes(d)) { outcome = "error"; cls = "bad"; }
      tbody.append(el("tr", {}, el("td", { class: "mono" }, d), el("td", {}, el("span", { class: `outcome ${cls}` }, outcome)),
        el("td", { class: "num" }, fmtMs((e.timings_ms || {})[d]))));
    }
  }

  const m = location.pathname.match(/^\/event\/(\d+)$/);
  if (!m) {
    $("error").hidden = false;
    $("error").textContent = "no event id in the address";
    return;
  }
  LW.loadNames().then(() => api(`/api/event/${m[1]}`)).then(render).catch((err) => {
    $("error").hidden = false;
    $("error").textContent = `cannot load event ${m[1]}: ${err.message}`;
  });
})();
