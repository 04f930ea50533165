// The extension's service worker: owner of the offscreen document that runs py_engine.
//
// Pyodide cannot start here (a service worker may not use import()), and this worker is stopped
// whenever Chrome likes, losing its globals. So Python lives in the offscreen document, which
// outlives any one service worker; this worker only makes sure the document exists and relays
// requests to it. runtime.sendMessage reaches every extension context except the sender, so
// every message names its `target`: "offscreen" for the document, "service-worker" for us.
//
//   {target: "offscreen", type: "status", wait?: true}  -> {booted, timings, error, adapter, instance}
//   {target: "offscreen", type: "selfcheck"}            -> run_selfcheck's report, or {error}
//
// Other pages (the popup) wrap a request as {target: "service-worker", type: "relay", message}
// rather than sending it to the document directly: only this worker can create the document.

const OFFSCREEN_PATH = "offscreen.html";

let ensuring = null; // the check-and-create in progress, shared by concurrent callers

// Concurrent callers share one check-and-create: a document that Chrome already lists may not
// have loaded yet, and a message sent to it then finds no listener.
function ensureOffscreen() {
  ensuring ??= (async () => {
    // Only one offscreen document may exist, and it may predate this worker: ask Chrome.
    const contexts = await chrome.runtime.getContexts({
      contextTypes: ["OFFSCREEN_DOCUMENT"],
      documentUrls: [chrome.runtime.getURL(OFFSCREEN_PATH)],
    });
    if (contexts.length) return;
    // Resolves once the document has loaded, its message listener included.
    await chrome.offscreen.createDocument({
      url: OFFSCREEN_PATH,
      reasons: ["WORKERS"],
      justification: "Runs the py_engine Python runtime (Pyodide) and its WebGPU work off the UI.",
    });
  })().finally(() => { ensuring = null; });
  return ensuring;
}

// Send a request to the offscreen document, creating it first if needed; resolves to its answer.
// Also the entry point for tests, which call it through the worker's DevTools handle.
async function pyEngineRequest(message) {
  if (message?.target !== "offscreen") {
    throw new Error(`pyEngineRequest expects a message with target "offscreen", got ${JSON.stringify(message)}`);
  }
  await ensureOffscreen();
  const answer = await chrome.runtime.sendMessage(message);
  if (answer === undefined) throw new Error(`the offscreen document did not answer ${JSON.stringify(message)}`);
  return answer;
}
self.pyEngineRequest = pyEngineRequest;

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (message?.target !== "service-worker") return false;
  if (message.type !== "relay") {
    sendResponse({ error: `unknown service-worker request ${JSON.stringify(message.type)}` });
    return false;
  }
  pyEngineRequest(message.message).then(sendResponse, (e) => sendResponse({ error: String(e?.message ?? e) }));
  return true; // the answer comes later
});

// Start Python as soon as the extension runs, so it is ready by the time anyone asks.
ensureOffscreen().catch((e) => console.error("py_engine: could not create the offscreen document:", e));
