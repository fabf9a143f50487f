// The demo chat page: sends prompts to /v1/chat/completions on its own origin (llmwall's
// reverse proxy), shows answers, and shows llmwall's block message (rule + categories) on 403.
// Text is always inserted with textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const history = []; // answered turns only: a blocked prompt is not resent with later ones
  let model = "llmwall-demo";

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function addMessage(role, text) {
    const box = el("div", `msg ${role}`);
    box.append(el("div", "who", role === "user" ? "you" : role === "assistant" ? "model" : "llmwall"));
    const body = el("div", "body", text);
    box.append(body);
    $("messages").append(box);
    box.scrollIntoView({ block: "end" });
    return { box, body };
  }

  function showBlock(err, status) {
    const { box, body } = addMessage("blocked", "");
    box.dataset.status = String(status);
    body.append(el("div", "block-title", "Blocked by llmwall"));
    body.append(el("div", "block-message", err.message || `HTTP ${status}`));
    const meta = el("dl", "block-meta");
    meta.append(el("dt", "", "rule"), el("dd", "block-rule", err.rule || "–"));
    const cats = el("dd", "block-categories");
    // category_names: the codes with their names ("S9 Indiscriminate Weapons"), from llmwall.
    const names = err.category_names || err.categories || [];
    for (const c of names) cats.append(el("span", "chip", c));
    if (!names.length) cats.textContent = "–";
    meta.append(el("dt", "", "categories"), cats);
    body.append(meta);
  }

  // Pull the provider-shaped error out of any body llmwall (or the model) may return.
  function errorOf(data) {
    if (data && typeof data.error === "object" && data.error) return data.error;
    if (data && typeof data.error === "string") return { message: data.error, rule: data.rule, categories: data.categories, category_names: data.category_names };
    return data || {};
  }

  async function readStream(resp, body) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let idx;
      while ((idx = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, idx);
        buf = buf.slice(idx + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const payload = line.slice(6);
          if (payload === "[DONE]") return text;
          const delta = JSON.parse(payload).choices?.[0]?.delta?.content;
          if (delta) { text += delta; body.textContent = text; }
        }
      }
    }
    return text;
  }

  async function send(prompt) {
    addMessage("user", prompt);
    const stream = $("stream").checked;
    const messages = [...history, { role: "user", content: prompt }];
    $("send").disabled = true;
    try {
      const resp = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model, messages, stream }),
      });
      if (!resp.ok) {
        let data = {};
        try { data = await resp.json(); } catch (_) { /* not JSON */ }
        const err = errorOf(data);
        if (resp.status === 403 || err.type === "llmwall_blocked") showBlock(err, resp.status);
        else addMessage("error", `Error ${resp.status}: ${err.message || resp.statusText}`);
        return;
      }
      let answer;
      if (stream && (resp.headers.get("content-type") || "").includes("event-stream")) {
        const { body } = addMessage("assistant", "");
        answer = await readStream(resp, body);
      } else {
        const data = await resp.json();
        answer = data.choices?.[0]?.message?.content ?? "";
        addMessage("assistant", answer);
      }
      history.push({ role: "user", content: prompt }, { role: "assistant", content: answer });
    } catch (e) {
      addMessage("error", `Request failed: ${e.message}`);
    } finally {
      $("send").disabled = false;
      $("prompt").focus();
    }
  }

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const prompt = $("prompt").value.trim();
    if (!prompt) return;
    $("prompt").value = "";
    send(prompt);
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  for (const b of document.querySelectorAll("button.example")) {
    b.addEventListener("click", () => { $("prompt").value = b.dataset.prompt; $("prompt").focus(); });
  }

  // The dashboard URL comes from the demo (query ?dashboard=... wins, then /demo-config.json).
  const link = $("dashboard-link");
  const fromQuery = new URLSearchParams(location.search).get("dashboard");
  const setLink = (url) => {
    if (url && /^https?:\/\//.test(url)) link.href = url;
    else link.hidden = true;
  };
  if (fromQuery) setLink(fromQuery);
  else fetch("/demo-config.json").then((r) => r.json()).then((c) => { if (c.model) model = c.model; setLink(c.dashboard_url); })
    .catch(() => setLink("http://llmwall.localhost/"));
})();
