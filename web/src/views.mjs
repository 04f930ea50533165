// Rendering of the app page's parts from the engine's answers (status, import results,
// predictions, chat). DOM only, no engine calls: app.mjs passes in what buttons should do.
// Text always goes in as textContent: nothing the model, a file or a web page says is HTML.

const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// --- numbers and times ---------------------------------------------------------------------------

export function number(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (!Number.isFinite(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e5)) return value.toExponential(2);
  return Number(value.toPrecision(digits)).toString();
}

function rate(value) {
  if (!value) return "–";
  return value >= 100 ? Math.round(value).toLocaleString("en") : number(value, 3);
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 1) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function clock(unixSeconds) {
  if (!unixSeconds) return "";
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// --- training -----------------------------------------------------------------------------------

export function renderMetrics(trainer) {
  $("m-step").textContent = trainer.step ?? "–";
  $("m-loss").textContent = number(trainer.loss, 4);
  $("m-lr").textContent = trainer.lr ? trainer.lr.toExponential(1) : "–";
  $("m-grad").textContent = number(trainer.grad_norm);
  $("m-eps").textContent = rate(trainer.examples_per_s);
  $("m-tps").textContent = rate(trainer.tokens_per_s);
}

const STATES = {
  idle: ["waiting for idle time", ""],
  active: ["training while idle", "active"],
  forced: ["training now", "active"],
  paused: ["paused", "warn"],
  stopped: ["stopped", "bad"],
};

export function renderScheduler(badge, line, s, loaded) {
  const [word, kind] = STATES[s.state] || [s.state || "–", ""];
  const running = s.running ? " · slice running" : "";
  badge.textContent = `scheduler: ${word}${running}`;
  badge.className = `badge ${s.running ? "active" : kind === "active" ? "ok" : kind}`;
  if (!loaded) {
    line.textContent = "Load a model to start.";
    return;
  }
  const parts = [
    `${s.slices ?? 0} slices, ${s.steps ?? 0} steps`,
    `last slice ${ago(s.last_slice_ago_s)}`,
  ];
  if (s.training_fraction !== undefined && s.training_fraction !== null) {
    parts.push(`${Math.round(100 * s.training_fraction)}% of the time training`);
  }
  line.replaceChildren(el("strong", { text: word[0].toUpperCase() + word.slice(1) }), `: ${parts.join(" · ")}.`);
}

export function renderLongTasks(node, tasks) {
  const training = tasks.filter((t) => t.training);
  const worst = (list) => Math.round(Math.max(0, ...list.map((t) => t.duration)));
  node.textContent = `Main thread: ${training.length ? `${training.length} long task${training.length > 1 ? "s" : ""} over 50 ms while training (worst ${worst(training)} ms)` : "no long task over 50 ms while training"}` +
    `; ${tasks.length - training.length} at other times${tasks.length - training.length ? ` (worst ${worst(tasks.filter((t) => !t.training))} ms)` : ""}.`;
  node.className = `small ${training.length ? "error" : "muted"}`;
}

// --- queue --------------------------------------------------------------------------------------

function barRows(tbody, counts, order, cls) {
  const entries = Object.entries(counts || {}).sort(order);
  const top = Math.max(1, ...entries.map(([, n]) => n));
  tbody.replaceChildren(...(entries.length ? entries.map(([name, n]) => el("tr", {},
    el("td", { text: name }),
    el("td", {}, el("div", { class: `bar ${cls ? cls(name) : ""}`, style: `width:${(100 * n) / top}%` })),
    el("td", { class: "n", text: String(n) }))) : [el("tr", {}, el("td", { class: "muted", text: "empty" }))]));
}

const PRIORITY_NAMES = { 300: "corrections", 200: "chats", 100: "imports" };

export function renderQueue(queue) {
  if (!queue) return;
  $("queue-total").replaceChildren(String(queue.total ?? 0), " ",
    el("small", { text: `records queued · ${queue.available ?? 0} waiting, ${queue.leased ?? 0} in training` }));
  barRows($("queue-sources").tBodies[0], queue.by_source, ([, a], [, b]) => b - a, (name) => name);
  const priorities = {};
  for (const [p, n] of Object.entries(queue.by_priority || {})) priorities[PRIORITY_NAMES[p] ? `${p} (${PRIORITY_NAMES[p]})` : p] = n;
  barRows($("queue-priorities").tBodies[0], priorities, ([a], [b]) => parseInt(b, 10) - parseInt(a, 10));
}

// --- snapshots and rollbacks --------------------------------------------------------------------

function metricText(snapshot) {
  const name = snapshot.monitor || (snapshot.quality && "accuracy" in snapshot.quality && !("loss" in snapshot.quality) ? "accuracy" : "loss");
  return `${name} ${number(snapshot.metric, 4)}`;
}

export function renderSnapshots(tbody, snapshots, onRestore) {
  if (!snapshots.length) {
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "muted none", text: "none yet: the first is taken when training starts" })));
    return;
  }
  tbody.replaceChildren(...[...snapshots].reverse().map((s) => el("tr", { class: s.current ? "current" : "" },
    el("td", { class: "num", text: String(s.index) }),
    el("td", { class: "num", text: String(s.step) }),
    el("td", { class: "num", text: metricText(s) }),
    el("td", { text: clock(s.time) }),
    el("td", {}, el("button", {
      type: "button", class: "restore", text: "Roll back here", "aria-label": `Roll back to snapshot ${s.index} (step ${s.step})`,
      onclick: (e) => onRestore(s, e.currentTarget),
    })))));
}

export function renderRollbacks(list, rollbacks) {
  if (!rollbacks.length) {
    list.replaceChildren(el("li", { class: "muted none", text: "none yet" }));
    return;
  }
  list.replaceChildren(...[...rollbacks].reverse().map((r) => el("li", { class: r.manual || r.by === "user" ? "manual" : "auto" },
    el("strong", { text: `step ${r.step} → ${r.to_step}` }), " ",
    el("span", { text: r.reason || "restored by hand" }), " ",
    r.time ? el("span", { class: "when", text: clock(r.time) }) : null)));
}

// --- model ----------------------------------------------------------------------------------------

export function renderModel(node, m) {
  const a = m.adapter || {};
  const rows = [
    ["kind", m.kind === "causal_lm" ? "chat (causal LM)" : m.kind === "classification" ? "classifier" : m.kind],
    ["family", m.family],
    ["parameters", m.parameters ? Number(m.parameters).toLocaleString("en") : null],
    ["trainable", m.trainable ? Number(m.trainable).toLocaleString("en") : null],
    ["labels", m.labels && m.labels.length ? m.labels.join(", ") : null],
    ["max length", m.max_length],
    ["backend", m.backend],
    ["device", [a.vendor, a.architecture || a.device].filter(Boolean).join(" ") || null],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  node.replaceChildren(...[
    el("div", { class: "name", text: m.name || "model" }),
    el("dl", {}, ...rows.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: String(v) })))),
    m.restored ? el("p", { class: "hint", text: `Restored: ${m.restored === true ? "training state, snapshots and history from the last session" : m.restored}.` }) : null,
  ].filter(Boolean));
}

// --- imports --------------------------------------------------------------------------------------

function countText(r) {
  const parts = [`${r.records ?? 0} record${r.records === 1 ? "" : "s"}`, `${r.added ?? 0} added`];
  if (r.duplicates) parts.push(`${r.duplicates} already queued`);
  if (r.refused) parts.push(`${r.refused} refused`);
  return parts.join(" · ");
}

function cleanedText(c) {
  if (!c) return "";
  const part = (label, counts) => {
    const items = Object.entries(counts || {}).filter(([, n]) => n);
    return items.length ? `${label} ${items.map(([k, n]) => `${n} ${k.replaceAll("_", " ")}`).join(", ")}` : "";
  };
  const text = [part("cleaning removed", c.removed), part("changed", c.changed), part("PII scrubbed:", c.pii_found)].filter(Boolean).join("; ");
  return text || "cleaning removed nothing";
}

function exampleText(e) {
  const head = e.label ? `[${e.label}] ` : "";
  if (e.text) return head + e.text;
  if (e.messages) return head + e.messages.map((m) => `${m.role}: ${m.content}`).join("\n");
  return JSON.stringify(e);
}

// The list item of an import: busy, or its result (what it produced and what cleaning removed),
// or its error.
export function importItem(entry, state) {
  if (state === "busy") return el("li", { class: "busy" }, el("div", { class: "what", text: entry.what }), el("div", { class: "muted", text: "importing…" }));
  if (entry.error) return el("li", { class: "bad" }, el("div", { class: "what", text: entry.what }), el("div", { class: "error", text: entry.error }));
  const r = entry.result || {};
  const examples = (r.examples || []).slice(0, 3);
  return el("li", {},
    el("div", { class: "what", text: entry.what }),
    el("div", { class: "counts", text: countText(r) }),
    el("div", { class: "cleaned", text: cleanedText(r.cleaned) }),
    examples.length ? el("details", {}, el("summary", { text: `first ${examples.length === 1 ? "example" : `${examples.length} examples`}` }),
      ...examples.map((e) => el("pre", { text: exampleText(e).slice(0, 600) }))) : null);
}

// What of an import is kept across a reload (small: the counts and a few examples, cut short).
export function compactImport(entry) {
  if (!entry.result) return entry;
  const r = entry.result;
  const cleaned = r.cleaned ? { removed: r.cleaned.removed, changed: r.cleaned.changed, pii_found: r.cleaned.pii_found } : undefined;
  const examples = (r.examples || []).slice(0, 3).map((e) => ({ label: e.label, text: e.text?.slice(0, 600), messages: e.messages?.slice(0, 4).map((m) => ({ role: m.role, content: String(m.content).slice(0, 300) })) }));
  return { what: entry.what, at: entry.at, result: { records: r.records, added: r.added, duplicates: r.duplicates, refused: r.refused, cleaned, examples } };
}

// --- chat -------------------------------------------------------------------------------------------

export function renderChat(list, messages) {
  if (!messages.length) {
    list.replaceChildren(el("li", { class: "note", text: "No messages yet. Training pauses while the model answers." }));
    return;
  }
  list.replaceChildren(...messages.map((m) => el("li", {
    class: `${m.role}${m.streaming ? " streaming" : ""}${m.error ? " bad" : ""}`,
    text: m.error ? `⚠ ${m.error}` : chatText(m),
  })));
  list.scrollTop = list.scrollHeight;
}

// --- classify ------------------------------------------------------------------------------------------

export function renderPrediction(node, text, result, labels, onCorrect) {
  const probs = Object.entries(result.probs || {}).sort(([, a], [, b]) => b - a);
  node.hidden = false;
  node.replaceChildren(
    el("div", {}, el("span", { class: "muted", text: "Prediction: " }), el("span", { class: "label", text: result.label }),
      el("span", { class: "muted", text: ` (${Math.round(100 * (result.probs?.[result.label] ?? 0))}%)` })),
    el("table", { "aria-label": "Probabilities" }, el("tbody", {}, ...probs.map(([label, p]) => el("tr", { class: label === result.label ? "top" : "" },
      el("td", { text: label, style: "width:35%" }),
      el("td", {}, el("div", { class: "bar", style: `width:${Math.max(1, 100 * p)}%` })),
      el("td", { class: "n", text: `${(100 * p).toFixed(1)}%`, style: "width:4.5rem;text-align:right" }))))),
    el("div", { class: "correct" },
      el("span", { class: "muted", text: "Wrong? It is: " }),
      ...labels.filter((l) => l !== result.label).map((label) => el("button", {
        type: "button", class: "correct-as", text: label, "aria-label": `Correct: “${text}” is ${label}`,
        onclick: (e) => onCorrect(text, label, e.currentTarget),
      }))),
    el("p", { class: "message", role: "status", hidden: true }),
  );
}

export function renderPredictionError(node, message) {
  node.hidden = false;
  node.replaceChildren(el("p", { class: "error", text: message }));
}

export function predictionMessage(node, text, kind) {
  const p = node.querySelector(".message");
  p.hidden = false;
  p.className = `message ${kind}`;
  p.textContent = text;
}
