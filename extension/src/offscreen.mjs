// The offscreen document: home of the engine in the extension. It starts the engine's worker
// (worker.mjs: Pyodide, py_engine and WebGPU, serving py_engine.app.tab_service.TabService),
// loads the tab classifier shipped in model/ (what `py-engine tabs deploy` wrote: base
// weights, the default adapter, categories, rules; model/manifest.json says where),
// starts idle training, and answers what the service worker relays (engine_link.mjs):
//
//   {type: "state", wait?}     -> {phase, error, adapter, model, categories, timings, instance,
//                                  remade, restarts} (wait: once the model is loaded, or failed to)
//   {type: "call", method, params} -> the engine's {result} or {error}
//   {type: "watchdog", every_ms?, hung_ms?} -> the watchdog's settings (tests shorten them)
//
// The document outlives service-worker restarts, so booting and loading are paid once per
// browser session; what the model learns is saved in IndexedDB by the engine itself. The
// document makes the engine anew (a new worker, WebGPU device and model, carrying on from what
// IndexedDB holds) when the GPU goes away under it (a driver reset, Chrome's GPU process crashed
// and restarted: WebGPU devices are lost for good), and when its worker stops answering.

import { EngineClient, RestartBudget } from "./engine_client.mjs";
import { fromWire, toWire } from "./wire.mjs";

const MODEL = "model/";
// Train only while the user is away (chrome.idle says idle or locked), and then at most half
// the time, in slices of a second: the browser stays the user's.
const SCHEDULER = { active_fraction: 0.0, idle_fraction: 0.5, slice_ms: 1000 };

// methods whose answer is the list of categories
const CATEGORY_LISTS = new Set(["categories", "rename_category", "add_category", "remove_category"]);
// ... and those whose answer is the model's summary with them
const CATEGORIES_WITH_MODEL = new Set(["reset_tabs", "import_adapter"]);

// The engine is made anew at most 3 times an hour; a GPU lost (or an engine hung) again and
// again leaves the rules to sort tabs.
const budget = new RestartBudget();
// The worker is asked every every_ms whether its thread still runs (EngineClient.ping, answered
// before Python); no answer in hung_ms and it is hung. Generous: Python may hold the thread for
// seconds at a time while loading, never for a minute.
const watch = { every_ms: 15_000, hung_ms: 60_000 };

const state = {
  phase: "starting", // starting -> loading -> ready | failed
  error: null,
  adapter: null, // the GPU, as the engine describes it (null: no WebGPU)
  model: null,
  categories: null,
  progress: null,
  timings: {},
  instance: crypto.randomUUID(), // tells callers whether they still talk to the same document
  remade: null, // {why: "gpu_lost" | "hung", reason, at}: the last time the engine was made anew
  restarts: 0, // how many times the engine was made anew in this document
};
// what each reason to make the engine anew is, in words
const WHY = { gpu_lost: "the GPU was lost", hung: "the engine stopped answering" };

let engine = null; // the engine's worker now: made anew after the GPU is lost or it hung
let loaded = null; // its loading: resolves once its model is ready
self.engineNow = () => engine; // for tests and DevTools

// Start an engine (a new worker: Pyodide, py_engine, a WebGPU device of its own) and load the
// tab model into it. What an engine that was replaced meanwhile says no longer counts.
function startEngine() {
  const client = new EngineClient(new URL("./worker.mjs?service=tabs&queue=tabs", import.meta.url));
  engine = client;
  const current = () => engine === client;
  Object.assign(state, { phase: "starting", error: null, adapter: null, model: null, progress: null, timings: {} });
  client.on("progress", (event) => { if (current()) state.progress = { what: event.what, done: event.done, total: event.total }; });
  // a call, or the training loop while nobody was asking anything, met the lost GPU
  client.on("device_lost", (event) => remake(client, "gpu_lost", event.message));
  client.on("loop_failed", (event) => {
    if (event.kind !== "device_lost") console.error(`the engine's training loop failed (it starts again in ${event.retry_s} s):`, event.message);
  });
  const booted = new Promise((resolve, reject) => {
    client.on("ready", (event) => resolve(event));
    client.on("failed", (event) => reject(new Error(event.error?.message || "the engine failed to start")));
  });
  loaded = load(client, booted, current);
  loaded.catch((e) => {
    if (!current()) return;
    if (e?.kind === "device_lost") return remake(client, "gpu_lost", e.message);
    state.phase = "failed";
    state.error = String(e?.message ?? e);
    console.error("the tab classifier failed to load:", e);
  });
}

// `client` can work no more: its GPU device went away ("gpu_lost": a driver reset, Chrome's GPU
// process restarted; no call will work on it again), or its worker stopped answering ("hung").
// Its work is in IndexedDB (the training state as last saved, the queue), so a new engine
// carries on from there.
function remake(client, why, reason) {
  if (client !== engine) return; // already made anew
  const now = Date.now();
  client.terminate();
  state.remade = { why, reason, at: now };
  const what = WHY[why];
  if (!budget.take(now)) {
    Object.assign(state, { phase: "failed", error: `${what}, the ${budget.max + 1}th time within an hour (${reason})`, model: null });
    console.error(`${what} again; the rules sort tabs from now on:`, reason);
    return;
  }
  state.restarts += 1;
  console.warn(`${what}; the engine starts again:`, reason);
  startEngine();
}

// What a caller hears while the engine is made anew (engine_link.mjs: "unreachable", as for a
// document made anew: corrections wait, the rules answer).
function remaking() {
  return { error: { message: `the engine is starting again: ${WHY[state.remade.why]} (${state.remade.reason})`, kind: "unreachable" } };
}

async function watchdog() {
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, watch.every_ms));
    const client = engine;
    if (state.phase === "failed") continue;
    const hungMs = watch.hung_ms;
    if (!(await client.ping(hungMs)) && client === engine) remake(client, "hung", `no answer in ${hungMs / 1000} s`);
  }
}

// {name: {$fetch: url}} of the files of the deploy's folder `dir` (the worker fetches them)
function filesUnder(manifest, dir) {
  const prefix = `${dir}/`;
  return Object.fromEntries(Object.keys(manifest.files).filter((n) => n.startsWith(prefix))
    .map((n) => [n.slice(prefix.length), { $fetch: MODEL + n }]));
}

async function load(client, booted, current) {
  const started = performance.now();
  const ready = await booted;
  if (!current()) return;
  state.adapter = ready.adapter;
  state.timings.boot_ms = performance.now() - started;
  if (!ready.adapter) throw new Error("no WebGPU adapter: this browser offers no GPU to the extension");
  state.phase = "loading";
  // what `py-engine tabs deploy` wrote: base/, adapter/, categories.json, manifest.json
  const manifest = await (await fetch(MODEL + "manifest.json")).json();
  const t0 = performance.now();
  const summary = await client.call("load_tab_model", {
    files: filesUnder(manifest, manifest.base),
    adapter: filesUnder(manifest, manifest.adapter),
    categories: { $fetch: MODEL + manifest.categories },
    base_dtype: manifest.gpu_base_dtype,
    // tabs it was trained on, replayed with the user's corrections (build.py writes them)
    background: { $fetch: MODEL + "background.jsonl" },
    // the rules answer for tabs the model is unsure of (py_engine/tabs/answer.py)
    rules: { $fetch: MODEL + manifest.rules },
    listed_domains: { $fetch: MODEL + manifest.listed_domains },
  });
  state.timings.load_ms = performance.now() - t0;
  // The first call compiles the model's GPU pipelines (and records its work): made here, so
  // that the first tabs the user opens do not pay for it against the latency budget, which
  // would send them to the rules for a while.
  const t1 = performance.now();
  await client.call("categorise", { tabs: [{ url: "https://example.com/docs/getting-started", title: "Getting started | Example" }] });
  state.timings.warm_ms = performance.now() - t1;
  await client.call("configure", SCHEDULER);
  // chrome.idle and the user's settings are the service worker's to read: asked here, so that
  // an engine started again (the document closed and made anew) trains only if the user is
  // away and has not paused training. Until told, the engine counts the user as active.
  const wishes = await trainingWishes();
  await client.call("set_idle_state", { state: wishes.idle });
  if (wishes.paused) await client.call("pause");
  await client.call("start_loop");
  if (!current()) return;
  // set_aside: the saved state was kept under another name and the model started afresh: it could
  // not be put back, or the shipped model changed since it was trained (service.py, tab_service.py)
  state.model = { labels: summary.labels, parameters: summary.parameters, trainable: summary.trainable, restored: summary.restored, backend: summary.backend, set_aside: summary.set_aside ?? null };
  state.categories = summary.categories;
  state.phase = "ready";
}

startEngine();
watchdog();

// Once the engine now is loaded (or failed to load); an engine made anew meanwhile is waited for.
async function settled() {
  for (let seen = null; seen !== loaded;) {
    seen = loaded;
    await seen.catch(() => {});
  }
}

// {idle: chrome.idle's state, paused: whether the user paused training}, from the service
// worker; if it cannot say, the user counts as active (no training until chrome.idle changes,
// and the change comes with the user's pause: TabSorter.idleChanged).
async function trainingWishes() {
  try {
    const wishes = await chrome.runtime.sendMessage({ target: "service-worker", type: "training" });
    if (wishes?.idle) return wishes;
    throw new Error(`the service worker answered ${JSON.stringify(wishes)}`);
  } catch (e) {
    console.warn("the user's idle state is unknown; training waits for it:", e);
    return { idle: "active", paused: false };
  }
}

const handlers = {
  async state(message) {
    if (message.wait) await settled();
    return { ...state };
  },
  async watchdog(message) {
    for (const key of ["every_ms", "hung_ms"]) {
      if (message[key] === undefined) continue;
      if (!(Number.isFinite(message[key]) && message[key] > 0)) throw new Error(`${key} must be a number > 0, got ${JSON.stringify(message[key])}`);
      watch[key] = message[key];
    }
    return { ...watch };
  },
  async call(message) {
    const client = engine;
    // an engine made anew after the GPU was lost takes calls once its model is back: until
    // then the caller hears what a document being made anew says (engine_link.mjs)
    if (state.restarts && state.phase !== "ready" && state.phase !== "failed") return remaking();
    try {
      const result = await client.call(message.method, message.params || {});
      // the categories as they are now, for whoever asks for the state next
      if (CATEGORY_LISTS.has(message.method)) state.categories = result;
      else if (CATEGORIES_WITH_MODEL.has(message.method)) state.categories = result.categories;
      return { result };
    } catch (e) {
      if (e.kind === "device_lost") remake(client, "gpu_lost", e.message);
      if (client !== engine && state.remade) return remaking(); // made anew under this call
      return { error: { message: e.message, kind: e.kind || "bug", traceback: e.traceback || "" } };
    }
  },
};

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (message?.target !== "offscreen") return false; // someone else's message
  const handler = Object.hasOwn(handlers, message.type) ? handlers[message.type] : null;
  if (!handler) {
    sendResponse({ error: { message: `unknown offscreen request ${JSON.stringify(message.type)}`, kind: "bug" } });
    return false;
  }
  handler(fromWire(message)).then((answer) => sendResponse(toWire(answer)),
    (e) => sendResponse({ error: { message: String(e?.message ?? e), kind: "bug" } }));
  return true; // the answer comes later
});
