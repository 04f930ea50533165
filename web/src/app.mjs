// The app page (app.html): loads a model into the engine's worker, feeds the training scheduler
// the page's idle time and the user's activity, shows training live, and lets the user teach
// the model (imports, chat, corrections) and take the adapter and the dataset away.
//
// The main thread only renders: Python, training and inference run in the worker
// (engine_client.mjs). Main-thread long tasks are measured with a PerformanceObserver and shown.
//
// For tests and the console, `window.app` holds the engine client, the last status, the long
// tasks seen, and the idle source. `?idle=manual` turns requestIdleCallback feeding off: idle
// time then comes only from `app.idle.fire(ms)` (an injectable idle source for tests).

import { drawLossChart } from "./chart.mjs";
import { EngineClient, RestartBudget, deviceLostReason } from "./engine_client.mjs";
import { commonFolder, download, droppedFiles, formatBytes, pickedFiles, readFiles, withoutCommonFolder } from "./files.mjs";
import { checkpointFiles, configName, weightsProblem } from "./checkpoint.mjs";
import * as view from "./views.mjs";
import { zip } from "./zip.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const STORAGE_KEY = "py_engine.app";
const ACTIVITY_EVERY_MS = 1000;
const TRAIN_NOW_BUDGET_MS = 4000;
const SAVE_EVERY_S = 5; // the engine saves its state this soon after training (default 30)

const saved = loadSaved();
let engine = new EngineClient(); // made anew on a new device when the GPU goes away (remake)
const app = {
  engine,
  status: null,
  model: null,
  adapter: null,
  longTasks: [], // {start, duration, training}
  trainingSpans: [], // [start, end] of slices seen running (page clock)
  busy: new Set(),
  idle: null,
};
window.app = app;
// The engine's worker is pinged every every_ms (EngineClient.ping: answered before Python); no
// answer in hung_ms and the page says it stopped answering, until it answers again (a long
// stretch of Python holds it for a while; a loop that never ends, for good). Tests shorten them.
app.watch = { every_ms: 15_000, hung_ms: 60_000 };
const RELOAD = { label: "Reload", run: () => location.reload() }; // a banner's action

// --- saved page state (the engine keeps its own: queue, adapter, optimizer, snapshots) ----

function loadSaved() {
  try {
    return { imports: [], conversation: null, logChat: true, ...JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}") };
  } catch {
    return { imports: [], conversation: null, logChat: true };
  }
}

function save() {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
  } catch {
    // storage full or disabled: the page still works, it just forgets on reload
  }
}

// --- messages ------------------------------------------------------------------------------

// `action`: {label, run}, a button before Dismiss.
function banner(id, kind, text, { dismiss = true, action = null } = {}) {
  let node = document.querySelector(`[data-banner="${id}"]`);
  if (!text) {
    node?.remove();
    return;
  }
  if (!node) {
    node = document.createElement("div");
    node.dataset.banner = id;
    $("banners").append(node);
  }
  node.className = `banner ${kind}`;
  node.replaceChildren(Object.assign(document.createElement("span"), { textContent: text }));
  if (action) {
    const button = Object.assign(document.createElement("button"), { type: "button", textContent: action.label });
    button.addEventListener("click", action.run);
    node.append(button);
  }
  if (dismiss) {
    const close = Object.assign(document.createElement("button"), { type: "button", textContent: "Dismiss", className: "link" });
    close.addEventListener("click", () => node.remove());
    node.append(close);
  }
}

function show(element, text, kind) {
  element.hidden = !text;
  element.textContent = text || "";
  if (kind !== undefined) element.className = kind;
}

// One line for the user; a bug's traceback goes to the console.
function describe(error) {
  if (error?.kind !== "bug") return String(error?.message ?? error);
  console.error(error.message, error.traceback || "");
  const lines = String(error.message).trim().split("\n");
  return `Internal error: ${lines[lines.length - 1]} (details in the console)`;
}

// Run `work` with `button` disabled meanwhile (one click, one call).
async function busy(button, work) {
  if (button) button.disabled = true;
  try {
    return await work();
  } finally {
    if (button) button.disabled = false;
    updateControls();
  }
}

// --- the device ------------------------------------------------------------------------------

async function checkWebGPU() {
  if (!navigator.gpu) return "This browser has no WebGPU, which the engine computes with. Use a recent Chrome, Edge or Chromium (on Linux, start it with --enable-unsafe-webgpu).";
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return "WebGPU is present but offers no GPU adapter here (blocked by the browser or its settings, or no usable driver). The engine cannot run.";
    app.limits = { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize, maxBufferSize: adapter.limits.maxBufferSize };
  } catch (e) {
    return `WebGPU failed to start: ${e.message}`;
  }
  return null;
}

function showAdapter(adapter) {
  if (!adapter) return;
  app.adapter = adapter;
  const name = [adapter.vendor, adapter.architecture || adapter.device || adapter.description].filter(Boolean).join(" ") || "GPU";
  const software = adapter.is_software ?? adapter.software ?? adapter.isFallback;
  const badge = $("device-badge");
  badge.textContent = software ? `Software GPU: ${name}` : `GPU: ${name}`;
  badge.className = `badge ${software ? "warn" : "ok"}`;
  banner("software", "warn", software
    ? `The GPU here is a software implementation (${name}): everything works, but training and replies are slow. A machine with a hardware GPU trains many times faster.`
    : null);
}

// --- status ----------------------------------------------------------------------------------

function render(status) {
  app.status = status;
  const s = status.scheduler || {};
  if (s.running && !app.runningSince) app.runningSince = performance.now();
  if (!s.running && app.runningSince) {
    app.trainingSpans.push([app.runningSince, performance.now()]);
    app.runningSince = null;
  }
  view.renderMetrics(status.trainer || {});
  view.renderScheduler($("scheduler-badge"), $("scheduler-line"), s, Boolean(app.model), status.trainer || {});
  $("pause").setAttribute("aria-pressed", String(s.state === "paused"));
  $("pause").textContent = s.state === "paused" ? "Resume" : "Pause";
  view.renderQueue(status.queue, status.trainer, dismissLoss);
  view.renderSnapshots($("snapshots").tBodies[0], status.snapshots || [], restoreSnapshot);
  view.renderRollbacks($("rollbacks"), mergeRestores(status.rollbacks || []));
  drawChart();
  if (status.model && status.model.adapter) showAdapter(status.model.adapter);
  saveSoon(status);
}

// The engine saves after slices on its cadence; training that stopped with steps unsaved (no
// slice came after) is saved by the page a little later, so a reload finds it.
function saveSoon(status) {
  if (!status.trainer?.unsaved || status.scheduler?.running || app.saveTimer) return;
  app.saveTimer = setTimeout(async () => {
    app.saveTimer = null;
    if (app.model && app.status?.trainer?.unsaved && !app.status.scheduler?.running) {
      try {
        await engine.call("save");
      } catch (e) {
        banner("save", "bad", `Could not save the training state: ${describe(e)}`);
      }
    }
  }, SAVE_EVERY_S * 1000);
}

// The automatic rollbacks (in the engine's status) with the user's restores (kept by the page),
// in the order they happened by step.
function mergeRestores(rollbacks) {
  const key = app.model?.key || app.model?.name;
  const mine = (saved.restores || []).filter((r) => r.model === key);
  return [...rollbacks, ...mine].sort((a, b) => a.step - b.step || (a.time || 0) - (b.time || 0));
}

function drawChart() {
  const status = app.status || {};
  const history = status.history || [];
  drawLossChart($("loss-chart"), { history, snapshots: status.snapshots || [], rollbacks: mergeRestores(status.rollbacks || []) });
  const canvas = $("loss-chart");
  if (history.length) {
    const first = history[0];
    const last = history[history.length - 1];
    canvas.setAttribute("aria-label", `Loss curve: ${history.length} steps, loss ${first.loss.toFixed(3)} at step ${first.step}, ${last.loss.toFixed(3)} at step ${last.step}`);
  }
}

async function refresh() {
  try {
    render(await engine.call("status"));
  } catch (e) {
    banner("status", "bad", `Could not read the engine's status: ${describe(e)}`);
  }
}

// --- main-thread long tasks ----------------------------------------------------------------

function duringTraining(start, end) {
  if (app.runningSince && end >= app.runningSince) return true;
  return app.trainingSpans.some(([a, b]) => start <= b && end >= a);
}

function watchLongTasks() {
  if (!PerformanceObserver.supportedEntryTypes?.includes("longtask")) {
    $("longtasks").textContent = "Main thread: this browser does not report long tasks.";
    return;
  }
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      app.longTasks.push({ start: entry.startTime, duration: entry.duration, training: duringTraining(entry.startTime, entry.startTime + entry.duration) });
    }
    view.renderLongTasks($("longtasks"), app.longTasks);
  }).observe({ type: "longtask", buffered: true });
  view.renderLongTasks($("longtasks"), app.longTasks);
}

// --- the scheduler's inputs: idle time and user activity -----------------------------------

function idleSource() {
  let inFlight = false;
  const source = {
    manual: params.get("idle") === "manual",
    sent: 0,
    // Tell the engine the page is idle for `ms` (what a requestIdleCallback deadline says).
    async fire(ms) {
      if (!app.model || inFlight) return null;
      inFlight = true;
      source.sent += 1;
      try {
        return await engine.call("idle", { deadline_ms: ms });
      } finally {
        inFlight = false;
      }
    },
  };
  if (!source.manual && "requestIdleCallback" in window) {
    const loop = () =>
      requestIdleCallback((deadline) => {
        const ms = deadline.timeRemaining();
        if (!deadline.didTimeout && ms > 1) source.fire(ms).catch((e) => console.warn("idle:", e.message));
        loop();
      });
    loop();
  }
  return source;
}

function watchActivity() {
  let last = 0;
  const onInput = () => {
    const now = performance.now();
    if (!app.model || now - last < ACTIVITY_EVERY_MS) return;
    last = now;
    engine.call("activity").catch(() => {});
  };
  for (const type of ["keydown", "pointerdown", "wheel", "touchstart", "input"]) {
    document.addEventListener(type, onInput, { passive: true, capture: true });
  }
}

async function watchEngine(client) {
  let last = performance.now();
  while (client === engine && !client.failure) {
    // a second at a time: new settings take effect within one
    await new Promise((resolve) => setTimeout(resolve, Math.min(1000, app.watch.every_ms)));
    if (performance.now() - last < app.watch.every_ms) continue;
    last = performance.now();
    const hungMs = app.watch.hung_ms;
    if (await client.ping(hungMs)) {
      banner("silent", "", "");
    } else if (client === engine && !client.failure) {
      banner("silent", "bad", `The engine has not answered for ${Math.round(hungMs / 1000)} s. If it stays silent, reload the page to start it again; the model comes back as it was last saved.`,
        { dismiss: false, action: RELOAD });
    }
  }
}

// --- model -------------------------------------------------------------------------------------

function labelsWanted() {
  const text = $("model-labels").value.trim();
  return text ? text.split(",").map((l) => l.trim()).filter(Boolean) : undefined;
}

async function loadModel(params, label) {
  show($("model-error"), "");
  show($("model-progress"), label, "progress");
  setModelButtons(false);
  try {
    const summary = await engine.call("load_model", params);
    app.model = summary;
    // What loads the same model again after a reload (the same labels: the same saved state).
    saved.model = { source: params.source === "files" ? "cached" : params.source, name: params.name, kind: params.kind, labels: summary.labels };
    save();
    if (summary.set_aside) {
      const { reason, kept_as: keptAs, corrections_requeued: again } = summary.set_aside;
      banner("state", "warn", `The saved training state could not be put back (${reason}). The model starts from what it was loaded with; the unreadable state is kept in this browser's storage as "${keptAs}".${again ? ` The ${again} correction${again === 1 ? "" : "s"} it had learned ${again === 1 ? "is" : "are"} queued to be learned again.` : ""}`);
    }
    // what the load says the user may not expect (a fine-tuned head not used for the labels typed)
    banner("model-notes", "warn", (summary.notes || []).join(" "));
    view.renderModel($("model-summary"), summary);
    $("model-summary").hidden = false;
    $("model-choose").hidden = true;
    showAdapter(summary.adapter);
    showTryPanel(summary);
    await showSetAside();
    await applySettings({ save_every_s: SAVE_EVERY_S, ...(saved.settings || {}) }, { quiet: true });
    sayEngineBack(`, and ${summary.name || "the model"} is back with what it learned up to its last save`);
    show($("model-progress"), "");
    await refresh();
  } catch (e) {
    show($("model-progress"), "");
    show($("model-error"), describe(e), "error");
    if (params.source === "cached") {
      delete saved.model;
      save();
    }
  } finally {
    setModelButtons(true);
    updateControls();
  }
}

function setModelButtons(enabled) {
  for (const id of ["load-bundled", "model-folder", "model-files"]) $(id).disabled = !enabled || app.noGPU;
}

async function loadPicked(items) {
  let name = commonFolder(items);
  items = withoutCommonFolder(items);
  let files;
  show($("model-error"), "");
  try {
    const chosen = checkpointFiles(items);
    const problem = await weightsProblem(chosen, app.limits, formatBytes);
    if (problem) throw problem;
    show($("model-progress"), `Reading ${chosen.length} files (${formatBytes(chosen.reduce((n, i) => n + i.file.size, 0))})…`, "progress");
    files = await readFiles(chosen);
    name = name || configName(files["config.json"]);
  } catch (e) {
    show($("model-progress"), "");
    show($("model-error"), e.message, "error");
    return;
  }
  // the engine tells the kind from config.json (a fine-tuned classifier's names itself); a
  // decoder is read as a classifier when asked; labels go with every request (a chat model
  // has none)
  const request = { source: "files", name, files };
  if ($("model-as-classifier").checked) request.kind = "classification";
  if (labelsWanted()) request.labels = labelsWanted();
  await loadModel(request, `Loading ${name}…`);
}

function showTryPanel(summary) {
  const chat = summary.kind !== "classification"; // a chat model or an encoder-decoder
  $("try-empty").hidden = true;
  $("chat").hidden = !chat;
  $("classify").hidden = chat;
  $("try-title").textContent = chat ? "Chat" : "Classify";
  $("chat-thinking-row").hidden = !summary.thinking; // Qwen3's enable_thinking in its template
  if (chat) view.renderChat($("chat-log"), conversation().messages);
}

// --- settings (the engine's configure: training options, the scheduler's shares) -----------

function showSettings(config) {
  const train = config.learner?.train || {};
  $("set-lr").value = train.lr ?? "";
  $("set-epochs").value = train.epochs ?? "";
  $("set-checkpointing").checked = !!train.gradient_checkpointing;
  $("set-active").value = Math.round(100 * (config.scheduler?.active_fraction ?? 0.1));
  $("set-idle").value = Math.round(100 * (config.scheduler?.idle_fraction ?? 0.9));
}

// The options the form asks for, or an Error naming the field that is wrong.
function settingsWanted() {
  const options = {};
  const train = {};
  const value = (id) => $(id).value.trim();
  if (value("set-lr")) {
    const lr = Number(value("set-lr"));
    if (!(lr > 0 && lr < 10)) throw new Error("The learning rate must be a number above 0, such as 0.002.");
    train.lr = lr;
  }
  if (value("set-epochs")) {
    const epochs = Number(value("set-epochs"));
    if (!Number.isInteger(epochs) || epochs < 1) throw new Error("Epochs must be a whole number of 1 or more.");
    train.epochs = epochs;
  }
  train.gradient_checkpointing = $("set-checkpointing").checked;
  for (const [id, key] of [["set-active", "active_fraction"], ["set-idle", "idle_fraction"]]) {
    if (!value(id)) continue;
    const percent = Number(value(id));
    if (!(percent >= 0 && percent <= 100)) throw new Error("A training share is a percentage from 0 to 100.");
    options[key] = percent / 100;
  }
  if (Object.keys(train).length) options.train = train;
  return options;
}

async function applySettings(options, { quiet = false } = {}) {
  try {
    const config = await engine.call("configure", options);
    showSettings(config);
    if (!quiet) show($("settings-message"), "Applied.", "message ok");
    return true;
  } catch (e) {
    show($("settings-message"), describe(e), "message bad");
    return false;
  }
}

// --- imports -------------------------------------------------------------------------------------

function looksLikeHTML(text) {
  return /^\s*(<!doctype html|<html[\s>])/i.test(text) || /<(p|div|article|h[1-6]|body)[\s>]/i.test(text.slice(0, 4096));
}

async function runImport(what, method, params) {
  const entry = { what, at: Date.now() };
  const item = view.importItem(entry, "busy");
  $("imports").prepend(item);
  try {
    const result = await engine.call(method, params);
    Object.assign(entry, { result });
  } catch (e) {
    Object.assign(entry, { error: describe(e) });
  }
  item.replaceWith(view.importItem(entry));
  saved.imports = [entry, ...saved.imports].slice(0, 12).map(view.compactImport);
  save();
  return entry;
}

async function importFiles(items) {
  for (const { path, file } of items) {
    await runImport(path, "import_file", { name: path, data: new Uint8Array(await file.arrayBuffer()) });
  }
}

// --- chat ---------------------------------------------------------------------------------------

function conversation() {
  if (!saved.conversation) saved.conversation = { id: crypto.randomUUID(), messages: [] };
  return saved.conversation;
}

async function sendChat(text) {
  const convo = conversation();
  convo.messages.push({ role: "user", content: text });
  const reply = { role: "assistant", content: "", streaming: true };
  convo.messages.push(reply);
  view.renderChat($("chat-log"), convo.messages);
  const bubble = $("chat-log").lastElementChild;
  const off = engine.on("token", (event) => {
    reply.content += event.text;
    bubble.textContent = view.chatText(reply);
    $("chat-log").scrollTop = $("chat-log").scrollHeight;
  });
  try {
    const request = { conversation_id: convo.id, message: text, log: $("chat-log-switch").checked };
    if (!$("chat-thinking-row").hidden) request.template_args = { enable_thinking: $("chat-thinking").checked };
    const result = await engine.call("chat", request);
    reply.content = result.text;
    reply.finish = result.finish_reason;
    if (result.dropped) reply.dropped = result.dropped;
  } catch (e) {
    reply.error = describe(e);
  } finally {
    off();
    delete reply.streaming;
    view.renderChat($("chat-log"), convo.messages);
    save();
  }
}

// --- classify ------------------------------------------------------------------------------------

async function predict(text) {
  const result = await engine.call("predict", { text });
  view.renderPrediction($("prediction"), text, result, app.model.labels || Object.keys(result.probs), correct);
  return result;
}

async function correct(text, label, button) {
  await busy(button, async () => {
    try {
      await engine.call("correct", { text, label });
      view.predictionMessage($("prediction"), `Queued as a correction (top priority): “${text}” is ${label}. It is learned at the next idle moment, or press Train now.`, "ok");
    } catch (e) {
      view.predictionMessage($("prediction"), describe(e), "bad");
    }
  });
}

// The user has read that the browser started the saved data empty: no page says it again.
async function dismissLoss(button) {
  await busy(button, async () => {
    try {
      await engine.call("acknowledge_loss");
    } catch (e) {
      banner("queue", "bad", `Could not dismiss the message: ${describe(e)}`);
    }
    await refresh();
  });
}

// --- snapshots -----------------------------------------------------------------------------------

async function restoreSnapshot(snapshot, button) {
  await busy(button, async () => {
    try {
      await engine.call("restore_snapshot", { index: snapshot.index });
      const step = app.status?.trainer?.step ?? snapshot.step;
      saved.restores = [...(saved.restores || []), { by: "user", model: app.model?.key || app.model?.name, time: Date.now() / 1000, step, to_step: snapshot.step, snapshot: snapshot.index }].slice(-20);
      save();
      banner("restore", "info", `Rolled back to snapshot #${snapshot.index} (step ${snapshot.step}).`);
    } catch (e) {
      banner("restore", "bad", `Could not roll back: ${describe(e)}`);
    }
    await refresh();
  });
}

// --- export and import ----------------------------------------------------------------------------

function filesMessage(text, kind) {
  show($("files-message"), text, `message ${kind}`);
}

function safeName(text) {
  return String(text || "model").replace(/[^\w.-]+/g, "-").replace(/^-+|-+$/g, "") || "model";
}

async function exportAdapter(button) {
  await busy(button, async () => {
    try {
      const { files } = await engine.call("export_adapter");
      download(zip(files), `${safeName(app.model?.name)}-adapter.zip`);
      filesMessage(`Adapter downloaded: ${Object.keys(files).join(", ")}.`, "ok");
    } catch (e) {
      filesMessage(describe(e), "bad");
    }
  });
}

async function importAdapter(input) {
  try {
    const files = await readFiles(pickedFiles(input).map((i) => ({ ...i, path: i.path.split("/").pop() })));
    await engine.call("import_adapter", { files });
    filesMessage(`Adapter imported from ${Object.keys(files).join(", ")}.`, "ok");
    await refresh();
  } catch (e) {
    filesMessage(describe(e), "bad");
  } finally {
    input.value = "";
  }
}

async function exportDataset(button) {
  const format = $("dataset-format").value;
  await busy(button, async () => {
    try {
      const { files } = await engine.call("export_dataset", { format });
      const names = Object.keys(files);
      if (names.length === 1) download(files[names[0]], names[0]);
      else download(zip(files), `dataset-${format}.zip`);
      filesMessage(`Dataset downloaded (${format}): ${names.join(", ")}.`, "ok");
    } catch (e) {
      filesMessage(describe(e), "bad");
    }
  });
}

// The saved states set aside (the engine keeps them until the user removes them).
async function showSetAside() {
  let states = [];
  try {
    states = await engine.call("set_aside_states");
  } catch (e) {
    filesMessage(describe(e), "bad");
  }
  $("set-aside").hidden = !states.length;
  view.renderSetAside($("set-aside-list").tBodies[0], states, downloadSetAside, removeSetAside);
}

async function downloadSetAside(state, button) {
  await busy(button, async () => {
    try {
      const { files } = await engine.call("export_set_aside_state", { name: state.name });
      download(zip(files), `${safeName(state.name)}.zip`);
      filesMessage(`Saved state ${state.name} downloaded: ${Object.keys(files).join(", ")}.`, "ok");
    } catch (e) {
      filesMessage(describe(e), "bad");
    }
  });
}

async function removeSetAside(state, button) {
  await busy(button, async () => {
    try {
      await engine.call("remove_set_aside_state", { name: state.name });
      filesMessage(`Saved state ${state.name} removed.`, "ok");
      if (app.model?.set_aside?.kept_as === state.name) banner("state"); // it named the state removed
    } catch (e) {
      filesMessage(describe(e), "bad");
    }
  });
  await showSetAside();
}

async function importDataset(input) {
  const format = $("dataset-format").value;
  for (const { path, file } of pickedFiles(input)) {
    const entry = await runImport(path, "import_dataset", { format, name: path, data: new Uint8Array(await file.arrayBuffer()) });
    filesMessage(entry.error ? entry.error : `Dataset ${path} imported (${format}).`, entry.error ? "bad" : "ok");
  }
  input.value = "";
}

// --- controls --------------------------------------------------------------------------------------

function updateControls() {
  const loaded = Boolean(app.model);
  for (const id of ["train-now", "pause", "export-adapter", "import-adapter"]) $(id).disabled = !loaded;
  $("export-dataset").disabled = false;
}

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab, focus) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (step) {
        e.preventDefault();
        select(tabs[(i + step + tabs.length) % tabs.length], true);
      }
    });
  });
}

function setupDrop(zone, onItems) {
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onItems(await droppedFiles(e.dataTransfer));
  });
}

function wire() {
  $("load-bundled").addEventListener("click", () => {
    const request = { source: "bundled", name: "MiniLM-L6 (bundled)", kind: "classification" };
    if (labelsWanted()) request.labels = labelsWanted();
    loadModel(request, "Downloading and loading MiniLM (90 MB)…");
  });
  for (const id of ["model-folder", "model-files"]) {
    $(id).addEventListener("change", async (e) => {
      const items = pickedFiles(e.target);
      e.target.value = "";
      if (items.length) await loadPicked(items);
    });
  }
  setupDrop($("model-drop"), (items) => items.length && !app.noGPU && loadPicked(items));

  $("train-now").addEventListener("click", (e) => busy(e.currentTarget, async () => {
    try {
      await engine.call("force_slice", { budget_ms: TRAIN_NOW_BUDGET_MS });
    } catch (err) {
      banner("train", "bad", `Training failed: ${describe(err)}`);
    }
    await refresh();
  }));
  $("pause").addEventListener("click", (e) => busy(e.currentTarget, async () => {
    const paused = app.status?.scheduler?.state === "paused";
    try {
      await engine.call(paused ? "resume" : "pause");
      saved.paused = !paused; // a reload keeps it: the engine starts paused
      save();
    } catch (err) {
      banner("train", "bad", describe(err));
    }
    await refresh();
  }));

  $("settings-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    let options;
    try {
      options = settingsWanted();
    } catch (err) {
      show($("settings-message"), err.message, "message bad");
      return;
    }
    await busy($("settings-apply"), async () => {
      if (await applySettings(options)) {
        saved.settings = { ...(saved.settings || {}), ...options, train: { ...(saved.settings?.train || {}), ...(options.train || {}) } };
        save();
      }
    });
  });

  setupTabs();
  $("panel-paste").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("paste-text").value;
    if (!text.trim()) {
      $("paste-text").focus();
      return;
    }
    const as = $("paste-as").value === "auto" ? (looksLikeHTML(text) ? "html" : "text") : $("paste-as").value;
    const data = new TextEncoder().encode(text);
    await busy($("paste-import"), () => as === "html"
      ? runImport("pasted HTML", "import_html", { url: "about:pasted", data })
      : runImport("pasted text", "import_text", { name: "pasted text", data }));
  });
  $("import-files").addEventListener("change", async (e) => {
    const items = pickedFiles(e.target);
    await importFiles(items);
    e.target.value = "";
  });
  setupDrop($("import-drop"), importFiles);
  $("panel-url").addEventListener("submit", async (e) => {
    e.preventDefault();
    const url = $("import-url").value.trim();
    await busy($("url-import"), () => runImport(url, "import_url", { url }));
  });

  $("chat-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("chat-input").value.trim();
    if (!text) return;
    $("chat-input").value = "";
    await busy($("chat-send"), () => sendChat(text));
    $("chat-input").focus();
  });
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("chat-log-switch").checked = saved.logChat !== false;
  $("chat-log-switch").addEventListener("change", (e) => {
    saved.logChat = e.target.checked;
    save();
  });
  $("chat-thinking").checked = saved.thinking !== false;
  $("chat-thinking").addEventListener("change", (e) => {
    saved.thinking = e.target.checked;
    save();
  });
  $("chat-new").addEventListener("click", () => {
    saved.conversation = null;
    view.renderChat($("chat-log"), conversation().messages);
    save();
  });

  $("classify-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("classify-input").value.trim();
    if (!text) return;
    await busy($("classify-go"), async () => {
      try {
        await predict(text);
      } catch (err) {
        view.renderPredictionError($("prediction"), describe(err));
      }
    });
  });

  $("export-adapter").addEventListener("click", (e) => exportAdapter(e.currentTarget));
  $("import-adapter").addEventListener("change", (e) => importAdapter(e.target));
  $("export-dataset").addEventListener("click", (e) => exportDataset(e.currentTarget));
  $("import-dataset").addEventListener("change", (e) => importDataset(e.target));

  new ResizeObserver(() => drawChart()).observe($("loss-chart"));
  // Best effort: a tab being hidden or closed saves what was trained since the last save.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden" && app.model && app.status?.trainer?.unsaved) engine.call("save").catch(() => {});
  });
}

// --- start ------------------------------------------------------------------------------------------

async function start() {
  wire();
  watchLongTasks();
  watchActivity();
  app.idle = idleSource();
  updateControls();
  for (const entry of saved.imports) $("imports").append(view.importItem(entry));

  const noGPU = await checkWebGPU();
  if (noGPU) {
    app.noGPU = true;
    banner("webgpu", "bad", noGPU, { dismiss: false });
    $("device-badge").textContent = "No WebGPU";
    $("device-badge").className = "badge bad";
    setModelButtons(false);
  }
  connect(engine, noGPU);
}

// WebGPU devices do not come back: when the GPU goes away (a driver reset, Chrome's GPU process
// restarting) the engine is made anew on a new device, as a reload would make it, at most 3
// times an hour (RestartBudget; then the page asks for a reload); the model comes back with what
// it learned up to its last save (restored from the saved training state, as after any reload).
const remakes = new RestartBudget();

function remake(client, reason, noGPU) {
  if (client !== engine) return; // made anew already
  const now = Date.now();
  if (!remakes.take(now)) {
    banner("gpu", "bad", `The GPU went away again (the browser said: ${reason}), the ${remakes.max + 1}th time within an hour. Reload the page to start the engine on a new one, with what the model learned up to its last save.`,
      { dismiss: false, action: RELOAD });
    return;
  }
  app.remade = { reason, at: now };
  app.ready = false;
  banner("gpu", "warn", `The GPU went away (the browser said: ${reason}). The engine is starting again on a new one, with what the model learned up to its last save…`, { dismiss: false });
  engine = app.engine = new EngineClient();
  client.terminate(); // its calls fail; what it says no longer counts
  connect(engine, noGPU);
}

// Once the engine made anew is back (with `model`, the model it restored), the page says so.
function sayEngineBack(model) {
  if (!app.remade || app.remade.back) return;
  app.remade.back = true;
  banner("gpu", "info", `The GPU went away (the browser said: ${app.remade.reason}); the engine started again on a new one${model}.`);
}

// The page listens to `client`, the engine now, and watches that it answers.
function connect(client, noGPU) {
  const current = () => client === engine;
  client.on("progress", (p) => {
    if (!current()) return;
    if (p.task === "boot" && p.done < p.total) show($("model-progress"), `${p.what}…`, "progress");
    else if (p.task === "boot") show($("model-progress"), "");
    else if (p.task === "load_model" && p.done < (p.total || Infinity)) show($("model-progress"), p.total > 1 ? `${p.what}: ${formatBytes(p.done)} of ${formatBytes(p.total)}` : `${p.what}…`, "progress");
  });
  client.on("status", (event) => current() && render(event));
  client.on("rollback", (event) => {
    if (current() && event.reason) banner("rollback", "warn", `Training was rolled back to step ${event.to_step}: ${event.reason}.`);
  });
  client.on("log", (event) => (event.level === "error" ? console.error : console.log)(`[engine] ${event.message}`));
  watchEngine(client);
  client.on("device_lost", (event) => remake(client, deviceLostReason(event.message), noGPU));
  client.on("failed", (event) => {
    if (!current()) return;
    banner("engine", "bad", `The engine stopped. ${describe(event.error || {})} Reload the page to start it again.`, { dismiss: false });
    show($("model-progress"), "");
  });
  client.on("ready", (event) => {
    if (!current()) return;
    app.ready = true;
    if (event.adapter) showAdapter(event.adapter);
    // the user paused training before this reload: it stays paused until they resume it
    if (saved.paused) engine.call("pause").catch((err) => banner("train", "bad", describe(err)));
    if (!noGPU && saved.model) {
      loadModel(saved.model, `Restoring ${saved.model.name || "the last model"}…`);
    } else if (!noGPU) {
      show($("model-progress"), "");
      sayEngineBack("");
    }
  });
}

start();
