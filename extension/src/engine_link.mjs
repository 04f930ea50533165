// How extension code reaches the engine in the offscreen document, from any context.
//
// Only the service worker can create the offscreen document (and only one may exist), so in
// the service worker a request makes sure the document exists and sends it directly; anywhere
// else (the popup, extension pages) it is relayed by the service worker. runtime.sendMessage
// reaches every extension context but the sender, so every message names its `target`.
//
//   await engineCall("status")                      // the engine's answer, or throws EngineError
//   await offscreenRequest({type: "state"})         // the document's own requests

import { EngineError } from "./engine_client.mjs";
import { fromWire, toWire } from "./wire.mjs";

export { EngineError };

export const OFFSCREEN_PATH = "offscreen.html";
const inServiceWorker = typeof ServiceWorkerGlobalScope !== "undefined" && self instanceof ServiceWorkerGlobalScope;

let ensuring = null; // the check-and-create in progress, shared by concurrent callers

// Concurrent callers share one check-and-create: a document that Chrome already lists may not
// have loaded yet, and a message sent to it then finds no listener.
export function ensureOffscreen() {
  ensuring ??= (async () => {
    const contexts = await chrome.runtime.getContexts({
      contextTypes: ["OFFSCREEN_DOCUMENT"],
      documentUrls: [chrome.runtime.getURL(OFFSCREEN_PATH)],
    });
    if (contexts.length) return;
    // Resolves once the document has loaded, its message listener included.
    await chrome.offscreen.createDocument({
      url: OFFSCREEN_PATH,
      reasons: ["WORKERS"],
      justification: "Runs the tab classifier (Python in Pyodide, on WebGPU) in a worker, off the UI.",
    });
  })().finally(() => { ensuring = null; });
  return ensuring;
}

// Close the offscreen document (the engine stops; its state is in IndexedDB). Service worker only.
export async function closeOffscreen() {
  const contexts = await chrome.runtime.getContexts({ contextTypes: ["OFFSCREEN_DOCUMENT"] });
  if (contexts.length) await chrome.offscreen.closeDocument();
}

// Send {type, ...} to the offscreen document; resolves to its answer. A document that could
// not be reached or made, or that went away before answering (closed, crashed), rejects with an
// EngineError of kind "unreachable": the next request makes the document anew.
export async function offscreenRequest(message) {
  const wire = { ...toWire(message), target: "offscreen" };
  let answer;
  try {
    if (inServiceWorker) {
      await ensureOffscreen();
      answer = await chrome.runtime.sendMessage(wire);
    } else {
      answer = await chrome.runtime.sendMessage({ target: "service-worker", type: "relay", message: wire });
    }
  } catch (e) {
    throw new EngineError({ message: `the engine could not be reached: ${e?.message ?? e}`, kind: "unreachable" });
  }
  if (answer == null) throw new EngineError({ message: `the engine did not answer ${JSON.stringify(message.type)}`, kind: "unreachable" });
  if (answer.relayError) throw new EngineError(answer.relayError);
  return fromWire(answer);
}

// Call a method of the engine (TabService); resolves to its result, rejects with EngineError.
export async function engineCall(method, params = {}) {
  const answer = await offscreenRequest({ type: "call", method, params });
  if (answer.error) throw new EngineError(answer.error);
  return answer.result;
}
