// The toolbar popup: engine status and a button for the kernel self-check.
//
// The popup lives only while it is open, so it holds no state: it asks the service worker, which
// relays to the offscreen document where Python runs (see service_worker.js).

const $ = (id) => document.getElementById(id);

async function request(type, extra = {}) {
  const answer = await chrome.runtime.sendMessage({
    target: "service-worker",
    type: "relay",
    message: { target: "offscreen", type, ...extra },
  });
  if (answer?.error) throw new Error(answer.error);
  return answer;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

const formatRelError = (e) => (typeof e === "number" ? e.toExponential(2) : String(e));

async function showStatus() {
  // `wait`: the answer comes once booting has finished, one way or the other. A failed boot
  // answers with its `error`, which request() throws.
  const status = await request("status", { wait: true });
  $("engine").textContent = "ready";
  $("engine").className = "ok";
  const a = status.adapter;
  $("adapter").textContent = `${a.vendor || "?"} ${a.architecture || a.device || ""}${a.is_software ? " (software)" : ""}`;
  const t = status.timings;
  $("timings").textContent = `Pyodide ${t.pyodide_boot_ms.toFixed(0)} ms, py_engine ${t.py_engine_load_ms.toFixed(0)} ms`;
  $("selfcheck").disabled = false;
}

$("selfcheck").addEventListener("click", async () => {
  $("selfcheck").disabled = true;
  $("result").className = "";
  $("result").textContent = "Checking the GPU kernels…";
  try {
    const report = await request("selfcheck");
    const failed = report.checks.filter((c) => !c.ok).map((c) => c.kernel);
    $("result").className = report.ok ? "ok" : "bad";
    $("result").textContent = `Max relative error ${formatRelError(report.max_rel_error)}: ` +
      (report.ok ? `all ${report.checks.length} kernels within bounds.` : `failed: ${failed.join(", ")}.`);
  } catch (e) {
    $("result").textContent = "";
    showError(String(e.message || e));
  } finally {
    $("selfcheck").disabled = false;
  }
});

showStatus().catch((e) => {
  $("engine").textContent = "failed";
  $("engine").className = "bad";
  showError(String(e.message || e));
});
