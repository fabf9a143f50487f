// Shared helpers for the dashboard pages. Every value from traffic goes into the page
// through textContent (never innerHTML), so endpoint paths or labels cannot inject markup.
"use strict";

const LW = (() => {
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") node.className = v;
      else if (k === "href") node.setAttribute("href", safeHref(v));
      else node.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // Only same-origin relative links are ever generated; anything else becomes inert.
  function safeHref(v) {
    const s = String(v);
    return s.startsWith("/") && !s.startsWith("//") ? s : "#";
  }

  async function api(path) {
    const resp = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
    return resp.json();
  }

  function fmtTime(ts) {
    if (ts === null || ts === undefined) return "–";
    const d = new Date(ts * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    return ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : Math.round(ms).toString();
  }

  const CUSTOM_MATCH_SCORE = 30; // same threshold as store.CUSTOM_MATCH_SCORE
  const KIND_FIELDS = {
    unsafe: "cf.llm.prompt.unsafe_topic_categories",
    pii: "cf.llm.prompt.pii_categories",
    secret: "cf.llm.prompt.secret_categories",
    response_unsafe: "cf.llm.response.unsafe_topic_categories",
    response_pii: "cf.llm.response.pii_categories",
    response_secret: "cf.llm.response.secret_categories",
  };

  // [kind, category] pairs detected in an event's fields.
  function categories(fields) {
    const out = [];
    for (const [kind, name] of Object.entries(KIND_FIELDS)) {
      for (const c of fields[name] || []) out.push([kind, c]);
    }
    const custom = fields["cf.llm.prompt.custom_topic_categories"] || {};
    for (const [label, score] of Object.entries(custom)) {
      if (score < CUSTOM_MATCH_SCORE) out.push(["custom", label]);
    }
    return out;
  }

  function actionBadge(action) {
    const a = action || "allow";
    return el("span", { class: `badge ${a}` }, a);
  }

  // S-code -> name ("S9" -> "Indiscriminate Weapons"), served by the dashboard from llmwall's one table.
  let unsafeNames = {};
  async function loadNames() {
    try {
      unsafeNames = (await api("/api/categories")).unsafe || {};
    } catch (err) {
      unsafeNames = {}; // codes alone are still correct
    }
  }

  function label(kind, category) {
    return kind === "unsafe" && unsafeNames[category] ? `${category} ${unsafeNames[category]}` : category;
  }

  function categoryChips(fields) {
    const span = el("span", { class: "chips" });
    for (const [kind, c] of categories(fields || {})) span.append(el("span", { class: `chip ${kind}`, title: kind }, label(kind, c)));
    return span;
  }

  // Text with line-break opportunities after "/" (long endpoint paths), still text nodes only.
  function breakable(text) {
    const span = el("span", { class: "mono" });
    const parts = String(text).split("/");
    parts.forEach((part, i) => {
      span.append(document.createTextNode(i < parts.length - 1 ? `${part}/` : part));
      if (i < parts.length - 1) span.append(document.createElement("wbr"));
    });
    return span;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  return { el, api, fmtTime, fmtMs, categories, actionBadge, categoryChips, breakable, clear, loadNames, label };
})();
