// Rendering of the app page's parts from the engine's answers (status, import results,
// predictions, chat). DOM only, no engine calls: app.mjs passes in what buttons should do.
// Text always goes in as textContent: nothing the model, a file or a web page says is HTML.

import { formatBytes } from "./files.mjs";

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

// The scheduler's state in words: [badge text, badge class]. "active" and "idle" are the
// user's state (training gets a small share of the time while they are active).
function schedulerWords(s) {
  if (s.state === "stopped") return ["stopped", "bad"];
  if (s.state === "paused") return [s.running ? "pausing…" : "paused", "warn"];
  if (s.inference) return ["paused for a reply", "warn"];
  if (s.state === "forced") return ["training now", "active"];
  if (s.running) return [s.state === "idle" ? "training while you are idle" : "training a little while you are active", "active"];
  return [s.state === "idle" ? "you are idle: training when the page is" : "you are active: training held back", s.state === "idle" ? "ok" : ""];
}

// Why no training is happening, in words the user can act on (the learner's idle_reason).
const IDLE_REASONS = {
  "nothing to learn yet": "Nothing to learn yet: import examples, chat, or correct a prediction.",
  "every record has been learned": "Every record has been learned: new imports, chats and corrections start a new round.",
};

export function renderScheduler(badge, line, s, loaded, trainer = {}) {
  const [words, kind] = schedulerWords(s);
  badge.textContent = `training: ${loaded ? words : "no model"}`;
  badge.className = `badge ${loaded ? kind : ""}`;
  if (!loaded) {
    line.textContent = "Load a model to start.";
    return;
  }
  const parts = [`${s.slices ?? 0} slices, ${s.steps ?? 0} steps`, `last slice ${ago(s.last_slice_ago_s)}`];
  const c = s.config || {};
  if (s.training_fraction !== undefined && s.training_fraction !== null) {
    const limit = s.state === "idle" ? c.idle_fraction : c.active_fraction;
    const window = c.window_s ? ` of the last ${number(c.window_s, 2)} s` : "";
    parts.push(`trained ${Math.round(100 * s.training_fraction)}%${window}` + (limit !== undefined ? ` (limit ${Math.round(100 * limit)}% while you are ${s.state === "idle" ? "idle" : "active"})` : ""));
  }
  if (trainer.saves !== undefined) parts.push(trainer.unsaved ? "saving soon" : trainer.saves ? "saved in this browser" : "nothing to save yet");
  const reason = trainer.idle_reason ? IDLE_REASONS[trainer.idle_reason] || `${trainer.idle_reason}.` : null;
  line.replaceChildren(...[el("strong", { text: words[0].toUpperCase() + words.slice(1) }), ". ", parts.join(" · "), ".",
    reason ? el("br") : null, reason ? el("span", { class: "muted", text: reason }) : null].filter(Boolean));
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

// dismiss(button): what the "Dismiss" button beside a loss message does.
export function renderQueue(queue, trainer, dismiss) {
  if (!queue) return;
  const d = trainer?.data;
  const work = d
    ? `${d.validation} held out to check quality · ${d.training} being learned · ${d.memory} learned and kept for replay` +
      (d.unusable ? ` · ${d.unusable} this model cannot learn` : "")
    : "";
  // the browser deleted the origin's corrupt databases: what they held is gone, and the page says
  // so until the user dismisses it
  $("queue-work").replaceChildren(...(queue.lost ? [el("span", { class: "error",
    text: `The browser found this site's saved data corrupt and started it empty: the queue and the training state from before then are gone (${queue.lost}).` }),
  " ", el("button", { class: "link", id: "dismiss-loss", type: "button", text: "Dismiss",
    onclick: (event) => dismiss?.(event.currentTarget) }), work && " "] : []), work);
  $("queue-total").replaceChildren(String(queue.total ?? 0), " ",
    el("small", { text: `${queue.total === 1 ? "record" : "records"} queued · ${queue.available ?? 0} waiting, ${queue.leased ?? 0} in training` }));
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
    el("td", { class: "num", text: s.current ? `${s.index} ✓` : String(s.index), title: s.current ? "checked on the current held-out examples" : undefined }),
    el("td", { class: "num", text: String(s.step) }),
    el("td", { class: "num", text: metricText(s) }),
    el("td", { text: clock(s.time) }),
    el("td", {}, el("button", {
      type: "button", class: "restore", text: "Roll back here", "aria-label": `Roll back to snapshot ${s.index} (step ${s.step})`,
      onclick: (e) => onRestore(s, e.currentTarget),
    })))));
}

// --- saved states set aside ----------------------------------------------------------------------

const SET_ASIDE_WHY = { unreadable: "could not be put back", shipped_changed: "the shipped model changed" };

// states: [{name, model, why, files, bytes}] (EngineService.set_aside_states); onDownload and
// onRemove get the state and the button clicked. Remove asks once more on the same button.
export function renderSetAside(tbody, states, onDownload, onRemove) {
  tbody.replaceChildren(...states.map((s) => el("tr", {},
    el("td", { text: s.name, class: "name" }),
    el("td", { text: SET_ASIDE_WHY[s.why] || s.why.replace(/_/g, " ") }),
    el("td", { class: "num", text: formatBytes(s.bytes) }),
    el("td", {},
      el("button", { type: "button", class: "download", text: "Download", "aria-label": `Download the files of ${s.name}`,
        onclick: (e) => onDownload(s, e.currentTarget) }), " ",
      el("button", { type: "button", class: "remove", text: "Remove", "aria-label": `Remove ${s.name}`,
        onclick: (e) => {
          const button = e.currentTarget;
          if (button.dataset.confirm) return onRemove(s, button);
          button.dataset.confirm = "1";
          button.textContent = "Remove for good";
          button.classList.add("danger");
        } })))));
}

// rollbacks: the guard's automatic ones ({reason, step, to_step, snapshot, metric}) and the
// user's restores ({by: "user", time, step, to_step, snapshot}).
export function renderRollbacks(list, rollbacks) {
  if (!rollbacks.length) {
    list.replaceChildren(el("li", { class: "muted none", text: "none yet" }));
    return;
  }
  list.replaceChildren(...[...rollbacks].reverse().map((r) => el("li", { class: r.by === "user" ? "manual" : "auto" },
    el("strong", { text: `${r.by === "user" ? "You" : "Automatic"}: step ${r.step} → ${r.to_step}` }), " ",
    el("span", { text: r.by === "user" ? `snapshot #${r.snapshot} restored` : r.reason }), " ",
    r.time ? el("span", { class: "when", text: clock(r.time) }) : null)));
}

// --- model ----------------------------------------------------------------------------------------

export function renderModel(node, m) {
  const a = m.adapter || {};
  const rows = [
    ["kind", { causal_lm: "chat (causal LM)", seq2seq: "encoder-decoder (seq2seq)", classification: "classifier" }[m.kind] || m.kind],
    ["family", m.family],
    ["parameters", m.parameters ? Number(m.parameters).toLocaleString("en") : null],
    ["trainable", m.trainable ? Number(m.trainable).toLocaleString("en") : null],
    ["labels", m.labels && m.labels.length ? m.labels.join(", ") : null],
    ["pooling", m.pooling],
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

// A message's text as shown: a reply still empty shows an ellipsis while it streams, and one of
// only whitespace says so (a tiny or untrained model can answer that).
export function chatText(m) {
  if (m.content && m.content.trim()) return m.content;
  if (m.streaming) return m.content ? m.content : "…";
  return m.content ? "(a reply of only whitespace)" : "(empty reply)";
}

// A finished reply that starts with a <think> block (Qwen3, DeepSeek R1 with thinking on):
// [thinking, answer], else null. A block never closed (the reply ran out of tokens) is all
// thinking.
export function splitThinking(m) {
  if (m.role !== "assistant" || m.streaming || m.error || typeof m.content !== "string") return null;
  const text = m.content.replace(/^\s+/, "");
  if (!text.startsWith("<think>")) return null;
  const end = text.indexOf("</think>");
  const thinking = (end < 0 ? text.slice(7) : text.slice(7, end)).trim();
  return [thinking, end < 0 ? "" : text.slice(end + 8).trim()];
}

function chatItem(m) {
  const cls = `${m.role}${m.streaming ? " streaming" : ""}${m.error ? " bad" : ""}`;
  const split = splitThinking(m);
  if (!split) return el("li", { class: cls, text: m.error ? `⚠ ${m.error}` : chatText(m) });
  const [thinking, answer] = split;
  return el("li", { class: cls },
    el("details", { class: "thinking" },
      el("summary", { text: thinking ? `Thinking (${thinking.split(/\s+/).length} words)` : "Thinking (empty)" }),
      el("div", { text: thinking })),
    el("div", { text: answer || "(no answer after thinking)" }));
}

export function renderChat(list, messages) {
  if (!messages.length) {
    list.replaceChildren(el("li", { class: "note", text: "No messages yet. Training pauses while the model answers." }));
    return;
  }
  list.replaceChildren(...messages.flatMap((m) => [
    // the engine gave the model only the latest turns that fit its positions
    m.dropped ? el("li", { class: "note", text: `This reply did not see the ${m.dropped} oldest message${m.dropped === 1 ? "" : "s"}: the conversation is longer than the model's context.` }) : null,
    chatItem(m),
  ].filter(Boolean)));
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
