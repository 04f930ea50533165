// The offscreen document: the one long-lived home of Python in the extension.
//
// It boots Pyodide and py_engine once, opens one WebGPU device for its whole life, and answers
// the requests the service worker relays (see service_worker.js). It outlives service-worker
// restarts, so the 4-10 s boot is paid once per browser session, not once per request.

import { boot } from "./boot.mjs";

const state = {
  booted: false, // Python, py_engine and a WebGPU device are all ready
  timings: null,
  error: null, // why booting failed, when it did
  adapter: null,
  instance: crypto.randomUUID(), // tells callers whether they still talk to the same document
};

const errorText = (e) => String(e?.message ?? e);

const ready = (async () => {
  const engine = await boot();
  const t0 = performance.now();
  // `device` stays a global of the interpreter: every later request reuses it.
  const adapter = JSON.parse(await engine.run(`
import json
from py_engine.gpu import open_device
device = await open_device()
json.dumps(device.info.as_dict())
`));
  state.timings = { ...engine.timings, open_device_ms: performance.now() - t0 };
  state.adapter = adapter;
  state.booted = true;
  return engine;
})();
// Record the failure rather than leave callers waiting on a boot that will never finish.
ready.catch((e) => {
  state.error = errorText(e);
  console.error("py_engine failed to boot:", e);
});

// One Python request at a time: they share the interpreter's globals and the device.
let queue = Promise.resolve();
function serially(task) {
  const result = queue.then(task);
  queue = result.catch(() => {});
  return result;
}

const handlers = {
  // Answers at once; with `wait: true`, only once booting has succeeded or failed.
  async status(message) {
    if (message.wait) await ready.catch(() => {});
    return { ...state };
  },
  async selfcheck() {
    const engine = await ready;
    return serially(async () => JSON.parse(await engine.run(`
import json
from py_engine.gpu.selfcheck import run_selfcheck
json.dumps(await run_selfcheck(device))
`)));
  },
};

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (message?.target !== "offscreen") return false; // someone else's message
  const handler = handlers[message.type];
  if (!handler) {
    sendResponse({ error: `unknown offscreen request ${JSON.stringify(message.type)}` });
    return false;
  }
  handler(message).then(sendResponse, (e) => sendResponse({ error: errorText(e) }));
  return true; // the answer comes later
});
