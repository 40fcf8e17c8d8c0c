// The liftlm serve page: post documents, follow their training (server-sent events read with fetch, so the
// bearer token can go in a header), and ask questions in two modes side by side. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const docs = new Map();       // id -> job
const following = new Set();  // ids whose event stream is open
let selected = null;

const tokenInput = $("token");
tokenInput.value = localStorage.getItem("liftlm-token") || "";
tokenInput.addEventListener("change", () => { localStorage.setItem("liftlm-token", tokenInput.value); refresh(); });

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (tokenInput.value) h["Authorization"] = "Bearer " + tokenInput.value;
  return h;
}

async function api(path, options) {
  options = options || {};
  options.headers = headers(options.headers);
  const r = await fetch(path, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const message = body && body.error ? body.error.message : r.status + " " + r.statusText;
    const err = new Error(message);
    err.status = r.status;
    throw err;
  }
  return body;
}

function say(text, isError) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "muted";
}

function progressText(job) {
  const p = job.progress || {};
  if (job.status === "training" && p.stage === "teacher" && p.steps) return `teacher: prompt ${p.step}/${p.steps}`;
  if (job.status === "training" && p.steps) return `epoch ${p.epoch}/${p.epochs}, step ${p.step}/${p.steps}`;
  if (job.status === "training") return p.stage || "preparing";
  if (job.status === "failed") return job.error || "failed";
  if (job.status === "ready") return job.seconds != null ? `ready in ${job.seconds.toFixed(1)} s` : "ready";
  return p.note ? `queued (${p.note})` : "queued";
}

function render() {
  const body = $("documents");
  body.textContent = "";
  $("no-documents").style.display = docs.size ? "none" : "";
  for (const job of docs.values()) {
    const tr = document.createElement("tr");
    tr.className = "doc" + (job.id === selected ? " selected" : "");
    tr.dataset.id = job.id;
    tr.dataset.status = job.status;
    const p = job.progress || {};
    const cells = [job.title, String(job.tokens)];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    const status = document.createElement("td");
    status.className = "status " + job.status;
    status.textContent = job.status;
    tr.appendChild(status);
    const prog = document.createElement("td");
    const bar = document.createElement("progress");
    bar.max = p.steps || 1;
    bar.value = job.status === "ready" ? bar.max : (p.step || 0);
    const label = document.createElement("div");
    label.className = "muted progress-text";
    label.textContent = progressText(job);
    prog.append(bar, label);
    tr.appendChild(prog);
    const loss = document.createElement("td");
    loss.textContent = p.loss != null ? Number(p.loss).toFixed(3) : "";
    tr.appendChild(loss);
    const id = document.createElement("td");
    id.innerHTML = "<code></code>";
    id.firstChild.textContent = job.id;
    tr.appendChild(id);
    tr.addEventListener("click", () => select(job.id));
    body.appendChild(tr);
  }
  const job = selected && docs.get(selected);
  $("selected").textContent = job ? `Asking about "${job.title}" (${job.status})` : "Select a document in the table.";
}

function select(id) {
  selected = id;
  render();
}

function update(job) {
  docs.set(job.id, job);
  if (!selected) selected = job.id;
  render();
  if (job.status === "queued" || job.status === "training") follow(job.id);
}

// Follow a document's progress: server-sent events read through fetch; reconnect with Last-Event-ID.
async function follow(id) {
  if (following.has(id)) return;
  following.add(id);
  let last = 0;
  try {
    for (let tries = 0; tries < 50; tries++) {
      try {
        const h = last ? { "Last-Event-ID": String(last) } : {};
        const r = await fetch(`/v1/documents/${id}/events`, { headers: headers(h) });
        if (!r.ok) return;
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let data = "", event = "message";
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) last = Number(line.slice(3).trim());
              else if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
            }
            if (!data) continue;
            const job = JSON.parse(data);
            if (event === "deleted") { docs.delete(id); render(); return; }
            docs.set(job.id, job);
            render();
            if (job.status === "ready" || job.status === "failed") return;
          }
        }
      } catch (e) { /* the connection dropped: reconnect below */ }
      await new Promise((done) => setTimeout(done, 1000));
    }
  } finally {
    following.delete(id);
  }
}

async function refresh() {
  try {
    const list = await api("/v1/documents");
    if ($("message").className === "error") say("");
    docs.clear();
    for (const job of list.data) docs.set(job.id, job);
    if (selected && !docs.has(selected)) selected = null;
    render();
    for (const job of list.data) if (job.status === "queued" || job.status === "training") follow(job.id);
  } catch (e) {
    say(e.status === 401 ? "This server needs an access token: open 'Access token' above." : e.message, true);
    if (e.status === 401) $("token-box").open = true;
  }
}

$("submit-doc").addEventListener("click", async () => {
  const file = $("doc-file").files[0];
  const text = $("doc-text").value;
  const title = $("doc-title").value.trim();
  const settingsText = $("doc-settings").value.trim();
  let settings = {};
  if (settingsText) {
    try { settings = JSON.parse(settingsText); } catch (e) { say("settings: not JSON (" + e.message + ")", true); return; }
  }
  let options;
  if (file) {
    const form = new FormData();
    form.append("file", file);
    if (title) form.append("title", title);
    form.append("settings", JSON.stringify(settings));
    options = { method: "POST", body: form };
  } else {
    const body = { text: text, settings: settings };
    if (title) body.title = title;
    options = { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } };
  }
  say("sending...");
  try {
    const r = await api("/v1/documents", options);
    say(r.queued ? `queued as ${r.id}` : `already known as ${r.id} (${r.status}): no new training`);
    selected = r.id;
    update(r.document);
    $("doc-file").value = "";
  } catch (e) {
    say(e.message, true);
  }
});

async function answer(mode, question, target) {
  target.textContent = "…";
  target.className = "";
  const maxTokens = parseInt($("max-tokens").value, 10) || 64;
  try {
    const r = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: selected, mode: mode, max_tokens: maxTokens,
                             messages: [{ role: "user", content: question }] }),
    });
    target.textContent = r.choices[0].message.content;
    target.dataset.done = "1";
  } catch (e) {
    target.textContent = e.message;
    target.className = "error";
    target.dataset.done = "1";
  }
}

$("ask").addEventListener("click", async () => {
  const question = $("question").value.trim();
  if (!selected) { say("select a document first", true); return; }
  if (!question) { say("type a question first", true); return; }
  for (const t of [$("answer-icl"), $("answer-lift")]) delete t.dataset.done;
  // one after the other: the server answers one question at a time anyway
  await answer("icl", question, $("answer-icl"));
  await answer("lift+icl", question, $("answer-lift"));
});
$("question").addEventListener("keydown", (e) => { if (e.key === "Enter") $("ask").click(); });

refresh();
