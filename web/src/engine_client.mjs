// The page's side of the engine's message API (worker.mjs is the other side): one promise per
// call, and subscriptions to the worker's events. The worker runs Python; nothing here does.
//
//   const engine = new EngineClient();
//   engine.on("status", (status) => render(status));
//   engine.on("device_lost", ({ message }) => ...);  // the GPU went away: no call works again
//   const summary = await engine.call("load_model", { source: "bundled" });
//   try { await engine.call("import_url", { url }); } catch (e) { e.kind === "user" ... }

import { transferables } from "./messages.mjs";

export class EngineError extends Error {
  constructor({ message, kind = "bug", traceback = "" }) {
    super(message);
    this.name = "EngineError";
    // "user": bad input or an expected failure; "device_lost": the GPU went away (the engine
    // must be made anew); "bug": with a traceback
    this.kind = kind;
    this.traceback = traceback;
  }
}

// What the browser said of a lost GPU, from a device_lost message (py_engine.gpu's
// DeviceLostError: "the GPU device was lost: <reason>"), without its closing period.
export function deviceLostReason(message) {
  return String(message).replace(/^the GPU device was lost: /, "").replace(/\.$/, "");
}

export class EngineClient {
  constructor(workerURL = new URL("./worker.mjs", import.meta.url)) {
    this.worker = new Worker(workerURL, { type: "module", name: "py_engine" });
    this.pending = new Map(); // id -> {resolve, reject, method}
    this.pongs = new Map(); // ping number -> its resolve
    this.listeners = new Map(); // event name or "*" -> Set of functions
    this.nextId = 1;
    this.failure = null;
    this.worker.onmessage = (e) => this.receive(e.data);
    // A worker script that cannot load (a missing file, a syntax error) ends every call.
    this.worker.onerror = (e) => {
      e.preventDefault();
      this.fail({ message: `the engine's worker failed: ${e.message || "it could not start"}`, kind: "bug" });
    };
  }

  // Call a method of the engine; resolves with its result, rejects with an EngineError.
  call(method, params = {}) {
    if (this.failure) return Promise.reject(new EngineError(this.failure));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.worker.postMessage({ id, method, params }, transferables(params));
    });
  }

  // Whether the worker's thread answers within `ms`: a ping its JS answers at once, before
  // Python. A worker stuck (a loop that never ends) never answers; one busy in Python for a
  // moment answers late.
  ping(ms) {
    const n = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pongs.delete(n);
        resolve(false);
      }, ms);
      this.pongs.set(n, () => {
        clearTimeout(timer);
        resolve(true);
      });
      this.worker.postMessage({ ping: n });
    });
  }

  // Call `listener(event)` for each event named `name` ("*": every event); returns an
  // unsubscribe function.
  on(name, listener) {
    if (!this.listeners.has(name)) this.listeners.set(name, new Set());
    this.listeners.get(name).add(listener);
    return () => this.listeners.get(name).delete(listener);
  }

  receive(message) {
    if (message.pong !== undefined) {
      this.pongs.get(message.pong)?.();
      this.pongs.delete(message.pong);
      return;
    }
    if (message.id !== undefined) {
      const call = this.pending.get(message.id);
      if (!call) return;
      this.pending.delete(message.id);
      if (message.error) call.reject(new EngineError(message.error));
      else call.resolve(message.result);
      if (message.error?.kind === "device_lost") this.emit({ event: "device_lost", message: message.error.message });
      return;
    }
    if (message.event === "failed") this.fail(message.error);
    this.emit(message);
    // the training loop met it while no call was made
    if (message.event === "loop_failed" && message.kind === "device_lost") this.emit({ event: "device_lost", message: message.message });
  }

  emit(event) {
    for (const key of [event.event, "*"]) {
      for (const listener of this.listeners.get(key) || []) {
        try {
          listener(event);
        } catch (e) {
          console.error(`a listener of "${event.event}" failed:`, e);
        }
      }
    }
  }

  fail(error) {
    if (this.failure) return;
    this.failure = error;
    for (const call of this.pending.values()) call.reject(new EngineError(error));
    this.pending.clear();
    this.emit({ event: "failed", error });
  }

  terminate() {
    this.worker.terminate();
    this.fail({ message: "the engine was stopped", kind: "user" });
  }
}

// How often an engine that can work no more (its GPU lost, its worker hung) is made anew: at
// most `max` times within `windowMs`; past that, whoever hosts it stops trying (the tab sorter
// leaves the rules to sort tabs, the app page asks for a reload).
export class RestartBudget {
  constructor(max = 3, windowMs = 60 * 60 * 1000) {
    this.max = max;
    this.windowMs = windowMs;
    this.times = []; // when the engine was made anew, within the window
  }

  // Whether one more restart is allowed at `now`; one that is, is counted.
  take(now = Date.now()) {
    while (this.times.length && now - this.times[0] > this.windowMs) this.times.shift();
    if (this.times.length >= this.max) return false;
    this.times.push(now);
    return true;
  }
}
