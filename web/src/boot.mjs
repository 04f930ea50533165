// Boots Pyodide from ./pyodide/, loads the py_engine wheel by name from the self-hosted lock
// file, and registers the WebGPU helper, the IndexedDB state store and the IndexedDB data store
// (training queue, chat log) as the JS modules "py_engine_webgpu", "py_engine_state_store" and
// "py_engine_queue". Shared by the page
// (index.html) and the extension's offscreen document; nothing here reaches the network.

import { loadPyodide } from "./pyodide/pyodide.mjs";
import * as queueStore from "./queue_store.mjs";
import * as stateStore from "./state_store.mjs";
import * as webgpuHelper from "./webgpu_helper.mjs";

export async function boot({ indexURL = new URL("./pyodide/", import.meta.url).href, stdout, stderr } = {}) {
  const t0 = performance.now();
  const pyodide = await loadPyodide({
    indexURL,
    stdout: stdout || ((line) => console.log(line)),
    stderr: stderr || ((line) => console.warn(line)),
  });
  const t1 = performance.now();
  pyodide.registerJsModule("py_engine_webgpu", webgpuHelper);
  pyodide.registerJsModule("py_engine_state_store", stateStore);
  pyodide.registerJsModule("py_engine_queue", queueStore);
  const loaded = await pyodide.loadPackage("py-engine", { checkIntegrity: true });
  if (!loaded.some((p) => p.name === "py-engine")) {
    throw new Error(`py-engine wheel did not load from ${indexURL} (loadPackage returned ${JSON.stringify(loaded)})`);
  }
  await pyodide.runPythonAsync("import py_engine, py_engine.gpu");
  const t2 = performance.now();
  const engine = {
    pyodide,
    timings: { pyodide_boot_ms: t1 - t0, py_engine_load_ms: t2 - t1 },
    // Run Python source (top-level await allowed); returns its last expression converted to JS.
    // A Python exception rejects with the full Python traceback as the message.
    async run(code) {
      const result = await pyodide.runPythonAsync(code);
      if (result && typeof result.toJs === "function") {
        const js = result.toJs({ dict_converter: Object.fromEntries });
        result.destroy();
        return js;
      }
      return result;
    },
  };
  return engine;
}
