// The engine's home in the app (app.html): a dedicated module Web Worker that boots Pyodide and
// py_engine (boot.mjs), creates py_engine.app.service.EngineService and answers the page's
// messages, so that nothing of Python, training or inference runs on the page's main thread.
//
// Messages (engine_client.mjs is the other side):
//   page -> worker  {id, method, params} | {ping}
//   worker -> page  {id, result} | {id, error: {message, kind: "user" | "device_lost" | "bug", traceback?}}
//                   {pong}: the ping's answer, given before Python
//                   {event: "ready" | "status" | "step" | "quality" | "snapshot" | "rollback" |
//                    "slice" | "token" | "progress" | "log" | "loop_failed" | "failed", ...}
// Bytes (model and adapter files, imported files, exports) travel as ArrayBuffers, transferred.
//
// The worker's URL chooses the service (?service=tabs: py_engine.app.tab_service.TabService,
// the extension's; default EngineService) and the training queue's IndexedDB store (?queue=).
//
// What the worker does itself, before Python:
//   any param of the form {"$fetch": "relative/url"} becomes that file's bytes, fetched from
//     the worker's own origin (the extension's bundled model files), nowhere else;
//   load_model {source: "bundled"}: fetches MiniLM from models/minilm/ (with progress);
//   load_model {source: "files"}: keeps the files in IndexedDB, so that after a reload
//     load_model {source: "cached", name} loads the same model without asking the user again;
//   import_url {url}: asks the server's /fetch endpoint for the URL (the page's origin cannot
//     read other origins), then hands the bytes to Python.
// Everything else goes to EngineService.call; the service pushes "status" events itself.

import { boot } from "./boot.mjs";
import { pack, transferables, unpack } from "./messages.mjs";
import * as stateStore from "./state_store.mjs";

const BUNDLED = { name: "MiniLM-L6 (bundled)", base: "models/minilm/", files: ["config.json", "tokenizer.json", "model.safetensors"] };
const MODEL_CACHE = "app-model-files/"; // state_store key prefix of cached model folders
const OPTIONS = new URL(self.location.href).searchParams;
// the Python class each ?service= names; nothing else can be asked for
const SERVICES = {
  engine: ["py_engine.app.service", "EngineService"],
  tabs: ["py_engine.app.tab_service", "TabService"],
};
const SERVICE = SERVICES[OPTIONS.get("service") || "engine"];
// the training queue's IndexedDB store (py_engine_data/<name>)
const QUEUE = OPTIONS.get("queue") || "default";
const FETCH = "$fetch";

class UserError extends Error {}

function post(message) {
  self.postMessage(message, transferables(message));
}

// --- Python --------------------------------------------------------------------------------

const SETUP = `
from pyodide.ffi import to_js
from py_engine_worker import emit as _emit
from py_engine.worker_bridge import answer as _answer, pack as _pack
from SERVICE_MODULE import SERVICE_CLASS as Service

def _js(text, buffers):
    return to_js([text, to_js([to_js(b) for b in buffers])])

def _on_event(event):
    try:
        _emit(*_js(*_pack(event)))
    except Exception as e:   # an event that cannot cross must not stop what emitted it
        _emit(*_js(*_pack({"event": "log", "level": "error",
                           "message": f"a {event.get('event')!r} event could not be sent: {e}"})))

service = Service(queue=QUEUE, emit=_on_event)

async def _call(method, params_text, buffers):
    return _js(*await _answer(service, method, params_text, buffers))

_call
`;

let callPython = null;

const ready = (async () => {
  const log = (level) => (line) => post({ event: "log", level, message: line });
  progress("boot", 0, 2, "Starting Python");
  const engine = await boot({ stdout: log("info"), stderr: log("warning") });
  progress("boot", 1, 2, "Starting the engine");
  engine.pyodide.registerJsModule("py_engine_worker", {
    emit: (text, buffers) => onEvent(unpack(text, [...buffers])),
  });
  if (!SERVICE) throw new Error(`unknown service ${JSON.stringify(OPTIONS.get("service"))}: one of ${Object.keys(SERVICES)}`);
  const setup = SETUP.replace("SERVICE_MODULE", SERVICE[0]).replace("SERVICE_CLASS", SERVICE[1])
    .replace("QUEUE", JSON.stringify(QUEUE));
  callPython = await engine.pyodide.runPythonAsync(setup);
  progress("boot", 2, 2, "Ready");
  return engine;
})();

async function python(method, params) {
  await ready;
  const [text, buffers] = pack(params || {});
  const reply = await callPython(method, text, buffers);
  const message = unpack(reply[0], [...reply[1]]);
  if (message.error) throw Object.assign(new Error(message.error.message), { reply: message.error });
  return message.result;
}

// --- events --------------------------------------------------------------------------------

function onEvent(event) {
  post(event);
}

function progress(task, done, total, what) {
  post({ event: "progress", task, done, total, what });
}

// --- what the worker does before Python ----------------------------------------------------

async function fetchBytes(url, task, what) {
  const response = await fetch(url);
  if (!response.ok) throw new UserError(`${what}: HTTP ${response.status} for ${url}`);
  const total = Number(response.headers.get("Content-Length")) || 0;
  const reader = response.body.getReader();
  const parts = [];
  let done = 0;
  let shown = 0;
  for (;;) {
    const { value, done: end } = await reader.read();
    if (end) break;
    parts.push(value);
    done += value.length;
    if (done - shown > 4 << 20) {
      shown = done;
      progress(task, done, total, what);
    }
  }
  const bytes = new Uint8Array(done);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return bytes;
}

// `params` with each {"$fetch": url} replaced by the bytes of that file of this origin.
async function fetched(value) {
  if (Array.isArray(value)) return Promise.all(value.map(fetched));
  if (!value || typeof value !== "object" || ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return value;
  const keys = Object.keys(value);
  if (keys.length === 1 && keys[0] === FETCH) {
    const url = new URL(value[FETCH], self.location.href);
    if (url.origin !== self.location.origin) throw new UserError(`${value[FETCH]} is not a file of this origin`);
    return fetchBytes(url, "fetch", `Reading ${url.pathname.split("/").pop()}`);
  }
  const out = {};
  for (const key of keys) out[key] = await fetched(value[key]);
  return out;
}

const handlers = {
  async load_model(params) {
    let { source, name, files } = params;
    if (source === "bundled") {
      files = {};
      for (const file of BUNDLED.files) {
        files[file] = await fetchBytes(new URL(BUNDLED.base + file, self.location.href), "load_model", `Downloading ${file}`);
      }
      name = name || BUNDLED.name;
    } else if (source === "cached") {
      files = await stateStore.getFiles(MODEL_CACHE + name);
      if (!files) throw new UserError(`the model "${name}" is no longer stored in this browser: pick its folder again`);
      source = "files";
    } else if (source === "files") {
      progress("load_model", 0, 1, "Keeping the model's files in this browser");
      try {
        await stateStore.putFiles(MODEL_CACHE + name, files);
      } catch (e) {
        post({ event: "log", level: "warning", message: `the model's files could not be kept for a reload (${e.message})` });
      }
    }
    progress("load_model", 0, 1, "Loading the model");
    const summary = await python("load_model", { ...params, source: source === "bundled" ? "bundled" : "files", name, files });
    progress("load_model", 1, 1, "Model loaded");
    return summary;
  },

  async import_url(params) {
    const endpoint = new URL("fetch?" + new URLSearchParams({ url: params.url }), self.location.href);
    const response = await fetch(endpoint);
    if (!response.ok) {
      let message = `the server answered HTTP ${response.status}`;
      try {
        message = (await response.json()).error || message;
      } catch {
        // not JSON: keep the status line
      }
      throw new UserError(message);
    }
    const data = new Uint8Array(await response.arrayBuffer());
    return python("import_url", { url: response.headers.get("X-Fetched-Url") || params.url, data });
  },
};

// --- messages ------------------------------------------------------------------------------

function errorOf(e) {
  if (e.reply) return e.reply;
  if (e instanceof UserError) return { message: e.message, kind: "user" };
  return { message: String(e?.message ?? e), kind: "bug", traceback: String(e?.stack ?? "") };
}

self.onmessage = async (event) => {
  // EngineClient.ping: answered at once, whatever Python is doing (if the thread runs at all)
  if (event.data?.ping !== undefined) {
    post({ pong: event.data.ping });
    return;
  }
  const { id, method, params } = event.data;
  try {
    const handler = Object.hasOwn(handlers, method) ? handlers[method] : null;
    const given = await fetched(params || {});
    const result = handler ? await handler(given) : await python(method, given);
    post({ id, result: result ?? null });
  } catch (e) {
    post({ id, error: errorOf(e) });
  }
};

ready.then(
  async () => {
    // the adapter as the engine sees it (software or not), before any model is loaded
    const adapter = await python("device", {}).catch(() => null);
    post({ event: "ready", adapter, ...(await python("status", {}).catch(() => ({}))) });
  },
  (e) => post({ event: "failed", error: errorOf(e) }),
);
