// The offscreen document: home of the engine in the extension. It starts the engine's worker
// (worker.mjs: Pyodide, py_engine and WebGPU, serving py_engine.app.tab_service.TabService),
// loads the tab classifier shipped in model/ (what `py-engine tabs deploy` wrote: base
// weights, the default adapter, categories, rules; model/manifest.json says where),
// starts idle training, and answers what the service worker relays (engine_link.mjs):
//
//   {type: "state", wait?}     -> {phase, error, adapter, model, categories, timings, instance}
//                                 (wait: once the model is loaded, or failed to)
//   {type: "call", method, params} -> the engine's {result} or {error}
//
// The document outlives service-worker restarts, so booting and loading are paid once per
// browser session; what the model learns is saved in IndexedDB by the engine itself.

import { EngineClient } from "./engine_client.mjs";
import { fromWire, toWire } from "./wire.mjs";

const MODEL = "model/";
// Train only while the user is away (chrome.idle says idle or locked), and then at most half
// the time, in slices of a second: the browser stays the user's.
const SCHEDULER = { active_fraction: 0.0, idle_fraction: 0.5, slice_ms: 1000 };

// methods whose answer is the list of categories
const CATEGORY_LISTS = new Set(["categories", "rename_category", "add_category", "remove_category"]);
// ... and those whose answer is the model's summary with them
const CATEGORIES_WITH_MODEL = new Set(["reset_tabs", "import_adapter"]);

const started = performance.now();
const state = {
  phase: "starting", // starting -> loading -> ready | failed
  error: null,
  adapter: null, // the GPU, as the engine describes it (null: no WebGPU)
  model: null,
  categories: null,
  progress: null,
  timings: {},
  instance: crypto.randomUUID(), // tells callers whether they still talk to the same document
};

const engine = new EngineClient(new URL("./worker.mjs?service=tabs&queue=tabs", import.meta.url));

engine.on("progress", (event) => { state.progress = { what: event.what, done: event.done, total: event.total }; });

const booted = new Promise((resolve, reject) => {
  engine.on("ready", (event) => resolve(event));
  engine.on("failed", (event) => reject(new Error(event.error?.message || "the engine failed to start")));
});

// {name: {$fetch: url}} of the files of the deploy's folder `dir` (the worker fetches them)
function filesUnder(manifest, dir) {
  const prefix = `${dir}/`;
  return Object.fromEntries(Object.keys(manifest.files).filter((n) => n.startsWith(prefix))
    .map((n) => [n.slice(prefix.length), { $fetch: MODEL + n }]));
}

const loaded = (async () => {
  const ready = await booted;
  state.adapter = ready.adapter;
  state.timings.boot_ms = performance.now() - started;
  if (!ready.adapter) throw new Error("no WebGPU adapter: this browser offers no GPU to the extension");
  state.phase = "loading";
  // what `py-engine tabs deploy` wrote: base/, adapter/, categories.json, manifest.json
  const manifest = await (await fetch(MODEL + "manifest.json")).json();
  const t0 = performance.now();
  const summary = await engine.call("load_tab_model", {
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
  await engine.call("categorise", { tabs: [{ url: "https://example.com/docs/getting-started", title: "Getting started | Example" }] });
  state.timings.warm_ms = performance.now() - t1;
  await engine.call("configure", SCHEDULER);
  // chrome.idle and the user's settings are the service worker's to read: asked here, so that
  // an engine started again (the document closed and made anew) trains only if the user is
  // away and has not paused training. Until told, the engine counts the user as active.
  const wishes = await trainingWishes();
  await engine.call("set_idle_state", { state: wishes.idle });
  if (wishes.paused) await engine.call("pause");
  await engine.call("start_loop");
  state.model = { labels: summary.labels, parameters: summary.parameters, trainable: summary.trainable, restored: summary.restored, backend: summary.backend };
  state.categories = summary.categories;
  state.phase = "ready";
})();
loaded.catch((e) => {
  state.phase = "failed";
  state.error = String(e?.message ?? e);
  console.error("the tab classifier failed to load:", e);
});

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
    if (message.wait) await loaded.catch(() => {});
    return { ...state };
  },
  async call(message) {
    try {
      const result = await engine.call(message.method, message.params || {});
      // the categories as they are now, for whoever asks for the state next
      if (CATEGORY_LISTS.has(message.method)) state.categories = result;
      else if (CATEGORIES_WITH_MODEL.has(message.method)) state.categories = result.categories;
      return { result };
    } catch (e) {
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
