// The toolbar popup (also opened as a page: popup.html?page, where a file can be picked for an
// import, which a popup cannot do without closing): the engine's state, the current tab's
// category (choosing another is a correction the model learns), sorting every tab, training
// (pause, reset to the shipped model, adapter export and import) and the categories.
//
// The popup holds no state: it asks the service worker (the sorter) and, through it, the
// engine, and refreshes while it is open. popup.html?tab=ID shows tab ID instead of the active
// one: the overview page links each web page to popup.html?page&tab=ID, to correct it there.

import { deviceLostReason } from "./engine_client.mjs";
import { engineCall } from "./engine_link.mjs";
import { isWebPage, notSorted, waitsForModel } from "./grouping.mjs";
import { formatBytes } from "./files.mjs";
import { unzip, zip } from "./zip.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const REFRESH_MS = 1000;

let snapshot = null; // the sorter's snapshot: engine state, groups, tabs, settings, budget
let status = null; // the engine's status (training, queue)
let tab = null; // the tab this popup speaks of, read again at each refresh (it may navigate)
let tabClosed = false; // ... and closed since
let resetArmed = null; // the reset button asks twice

function sorter(action, ...args) {
  return chrome.runtime.sendMessage({ target: "service-worker", type: "sorter", action, args }).then((answer) => {
    if (answer?.relayError) throw new Error(answer.relayError.message);
    return answer;
  });
}

function message(id, text, kind = "") {
  $(id).textContent = text;
  $(id).className = `detail ${kind}`;
}

function describeAdapter(a) {
  if (!a) return "no GPU";
  const name = [a.vendor, a.architecture || a.device].filter(Boolean).join(" ");
  return `${name || "a GPU"}${a.is_software ? " (software)" : ""}`;
}

// --- the engine ---------------------------------------------------------------------------

function showEngine(state) {
  const badge = $("engine");
  $("retry-model").hidden = true;
  badge.className = `badge ${state.phase}`;
  const ready = state.phase === "ready";
  const starting = state.phase === "starting" || state.unreachable; // a document gone is made anew
  // the engine made anew (offscreen.mjs), until its model is back
  const again = state.restarts && state.remade && !ready && state.phase !== "failed" ? remadeBecause(state.remade) : "";
  if (starting) {
    badge.className = "badge starting";
    badge.textContent = "Starting…";
    message("engine-detail", `${again || "Starting Python and the GPU. "}Until the model is ready, tabs are sorted by rules.`, again ? "warn" : "");
  } else if (state.phase === "loading") {
    badge.textContent = "Loading model…";
    const p = state.progress;
    message("engine-detail", `${again}Loading the tab model on ${describeAdapter(state.adapter)}${p?.what ? `: ${p.what}` : ""}. Rules sort tabs meanwhile.${waitingTabs()}`, again ? "warn" : "");
  } else if (ready) {
    badge.textContent = "Model ready";
    const b = snapshot?.budget;
    const slow = b?.slow ? " It is over its time budget now, so the rules answer until it is faster." : "";
    const aside = state.model?.set_aside;
    const n = aside?.corrections_requeued;
    const relearn = n ? ` It learns your ${n === 1 ? "correction" : `${n} corrections`} again while you are away.` : "";
    // the saved state set aside (py_engine/app/service.py): unreadable, or made from the model an
    // earlier version of the extension shipped
    const updated = aside?.why === "shipped_changed";
    const set = !aside ? "" : updated
      ? ` This version of the extension ships a new model, so it starts from that one, with your categories; the model it had made of the old one is kept as "${aside.kept_as}".${relearn}`
      : ` What it had learned could not be read back (${aside.reason}), so it starts again from the shipped model; the unreadable copy is kept as "${aside.kept_as}".${relearn}`;
    message("engine-detail", `MiniLM classifier on ${describeAdapter(state.adapter)}, ${(state.model?.parameters / 1e6).toFixed(1)}M parameters.${set}${slow}${waitingTabs()}`, aside && !updated ? "warn" : "");
  } else {
    badge.textContent = "Rules only";
    $("retry-model").hidden = false; // a GPU back, WebGPU turned on: the model may load now
    message("engine-detail", `The model is not available (${state.error}). Tabs are sorted by domain and keyword rules, and by a guess from their words where no rule knows the site.`, "warn");
    for (const id of ["training", "corrections", "steps"]) $(id).textContent = "needs the model";
  }
  if (starting || state.phase === "loading") {
    // corrections made meanwhile wait in the sorter and are given to the model once it is ready
    const n = snapshot?.unlearned || 0;
    $("corrections").textContent = n ? `${n} waiting for the model to load` : "–";
  }
  for (const id of ["pause", "reset", "export", "import", "new-category", "add"]) $(id).disabled = !ready;
}

function remadeBecause({ why, reason }) {
  if (why === "gpu_lost") {
    return `The GPU went away (Chrome said: ${deviceLostReason(reason)}), so the model starts again on a new one; what it learned is kept. `;
  }
  return `The engine stopped answering (${reason}), so it starts again; what the model learned is kept. `;
}

// Tabs the rules could not place wait, ungrouped, for the model (the sorter asks it again).
function waitingTabs() {
  const n = Object.values(snapshot?.tabs || {}).filter(waitsForModel).length;
  return n ? ` ${n} tab${n === 1 ? "" : "s"} the rules could not place ${n === 1 ? "waits" : "wait"} for it.` : "";
}

function showTraining() {
  if (!status) return;
  const s = status.scheduler;
  const t = status.trainer;
  // the queue holds corrections only: those not leased yet or still to be trained are waiting;
  // learned ones leave the queue for the replay memory once the state that learned them is saved
  const d = t?.data || {};
  const waiting = (status.queue?.available || 0) + (d.pending || 0);
  const learned = (d.memory || 0) + Math.max(0, (d.training || 0) - (d.pending || 0));
  const busy = s.running && t && !t.done; // the loop also looks in (briefly) when nothing is to learn
  const byState = {
    paused: "paused",
    forced: "training now",
    stopped: "stopped",
    active: waiting ? "waits until you are away" : "up to date",
    idle: busy ? "training now (you are away)" : waiting ? "learns while you are away" : "up to date",
  };
  $("training").textContent = byState[s.state] || s.state;
  $("pause").textContent = s.state === "paused" ? "Resume" : "Pause";
  $("corrections").textContent = `${waiting} waiting, ${learned} learned`;
  // Chrome deleted the extension's databases, found corrupt (web/src/storage_loss.mjs): say so
  const lost = status.queue?.lost;
  message("storage-message", lost ? `Chrome found the extension's saved data corrupt and started it empty: ` +
    `the corrections and what the model had learned before then are gone (${lost}).` : "", lost ? "bad" : "");
  $("dismiss-loss").hidden = !lost; // said until the user has read it (acknowledge_loss)
  $("steps").textContent = t && t.step ? `${t.step}${t.loss != null ? `, last loss ${t.loss.toFixed(3)}` : ""}` : "none yet";
}

function showSpeed() {
  const b = snapshot?.budget;
  if (!b) return;
  if (snapshot.engine.phase === "failed") {
    $("speed").textContent = "the rules answer at once";
    return;
  }
  const est = b.estimateMs == null ? "not measured yet" : `${b.estimateMs.toFixed(b.estimateMs < 10 ? 1 : 0)} ms per tab`;
  $("speed").textContent = `${est} (budget ${b.perTabMs} ms)`;
}

// --- the tab --------------------------------------------------------------------------------

async function findTab() {
  if (params.has("tab")) return chrome.tabs.get(Number(params.get("tab"))).catch(() => null);
  const [active] = await chrome.tabs.query({ active: true, currentWindow: true });
  return active && isWebPage(active.url) ? active : null;
}

function categories() {
  return snapshot?.engine?.categories || [];
}

// The tab as it is now: its title and address change when it navigates; closed, it keeps what
// was shown and says so.
async function readTab() {
  if (!tab || tabClosed) return;
  const now = await chrome.tabs.get(tab.id).catch(() => null);
  if (now?.url !== tab.url) message("tab-message", ""); // it spoke of the page shown before
  if (now) tab = now;
  else tabClosed = true;
}

function showTab() {
  if (!tab) return;
  $("this-tab").hidden = false;
  $("tab-title").textContent = tab.title || tab.url;
  $("tab-title").title = tab.url;
  const icon = tab.favIconUrl?.startsWith("data:") ? tab.favIconUrl : "";
  if (icon) $("tab-icon").src = icon;
  $("tab-icon").hidden = !icon;
  const select = $("tab-category");
  const choosable = !tabClosed && isWebPage(tab.url);
  select.disabled = !choosable;
  if (!choosable) {
    message("tab-source", tabClosed ? "This tab is closed." : "Only web pages are sorted.", "warn");
    return;
  }
  const known = snapshot?.tabs?.[tab.id];
  if (document.activeElement !== select) {
    select.replaceChildren(new Option("(not sorted)", ""), ...categories().map((c) => new Option(c.name, c.id)));
    select.value = known?.category || "";
  }
  const how = { model: "sorted by the model", rules: "sorted by the rules", user: "placed by you" };
  const said = notSorted(known) ? "Not sorted yet: the rules do not know this page; the model sorts it when it can." : known ? how[known.source] || "" : "";
  message("tab-source", tab.pinned ? "Pinned tabs stay where they are: a category chosen here is learned, and the tab stays pinned." : said);
}

// --- categories -----------------------------------------------------------------------------

function showCategories() {
  const list = $("categories");
  if (document.activeElement?.tagName === "INPUT" && list.contains(document.activeElement)) return; // typing a name
  const counts = {};
  for (const t of Object.values(snapshot?.tabs || {})) if (t.category) counts[t.category] = (counts[t.category] || 0) + 1;
  list.replaceChildren(...categories().map((c) => {
    const li = document.createElement("li");
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.style.background = `var(--${c.colour})`;
    const name = document.createElement("input");
    name.value = c.name;
    name.title = c.description || c.name;
    name.disabled = snapshot?.engine?.phase !== "ready";
    name.setAttribute("aria-label", `name of ${c.name}`);
    name.addEventListener("change", () => editCategories(() => engineCall("rename_category", { id: c.id, name: name.value }), `Renamed to ${name.value}.`));
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = counts[c.id] ? `${counts[c.id]} tab${counts[c.id] > 1 ? "s" : ""}` : "";
    const remove = document.createElement("button");
    remove.className = "remove";
    remove.textContent = "×";
    remove.title = `Remove ${c.name}`;
    remove.disabled = name.disabled || categories().length <= 2;
    remove.addEventListener("click", () => editCategories(() => engineCall("remove_category", { id: c.id }), `Removed ${c.name}; its tabs are sorted again.`));
    li.append(dot, name, count, remove);
    li.dataset.id = c.id;
    return li;
  }));
}

async function editCategories(change, done) {
  try {
    const list = await change();
    await sorter("categoriesChanged", list);
    message("category-message", done, "ok");
  } catch (e) {
    message("category-message", e.message, "bad");
  }
  await refresh();
}

// --- saved states set aside ----------------------------------------------------------------------

const KEPT_WHY = { unreadable: "Unreadable copy", shipped_changed: "Before an update" };
let keptShown = false; // listed once the model is ready (listing reads every kept state)

// The saved states the engine set aside (EngineService.set_aside_states): kept until removed.
async function showKept() {
  let states = [];
  try {
    states = await engineCall("set_aside_states");
  } catch (e) {
    message("learning-message", e.message, "bad");
  }
  $("kept").hidden = !states.length;
  if (!states.length) return;
  const total = states.reduce((n, s) => n + s.bytes, 0);
  $("kept-detail").textContent = `Earlier learning kept aside (${states.length}, ${formatBytes(total)}): download it, or remove it to free the space.`;
  $("kept-states").replaceChildren(...states.map((s) => {
    const item = document.createElement("li");
    const label = Object.assign(document.createElement("span"), {
      className: "title", textContent: `${KEPT_WHY[s.why] || s.why.replace(/_/g, " ")}, ${formatBytes(s.bytes)}`, title: s.name,
    });
    const download = Object.assign(document.createElement("button"), { textContent: "Download", className: "download" });
    download.addEventListener("click", () => downloadKept(s));
    const remove = Object.assign(document.createElement("button"), { textContent: "Remove", className: "remove" });
    remove.addEventListener("click", () => {
      if (!remove.dataset.confirm) {
        remove.dataset.confirm = "1"; // asked once more on the same button
        remove.textContent = "Remove for good";
        return;
      }
      removeKept(s);
    });
    item.append(label, download, remove);
    return item;
  }));
}

async function downloadKept(state) {
  try {
    const { files } = await engineCall("export_set_aside_state", { name: state.name });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(zip(files));
    a.download = `${state.name.replace(/[^\w.-]+/g, "-")}.zip`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    message("learning-message", `Kept state downloaded: ${Object.keys(files).join(", ")}.`, "ok");
  } catch (e) {
    message("learning-message", e.message, "bad");
  }
}

async function removeKept(state) {
  try {
    await engineCall("remove_set_aside_state", { name: state.name });
    message("learning-message", "Kept state removed.", "ok");
  } catch (e) {
    message("learning-message", e.message, "bad");
  }
  await showKept();
}

// --- refreshing -----------------------------------------------------------------------------

async function refresh() {
  try {
    snapshot = await sorter("snapshot");
    if (snapshot.engine.phase === "ready") status = await engineCall("status");
    await readTab();
  } catch (e) {
    message("engine-detail", e.message, "bad");
    return;
  }
  showEngine(snapshot.engine);
  showTraining();
  showSpeed();
  showTab();
  showCategories();
  $("include-user-groups").checked = snapshot.settings.includeUserGroups;
  if (snapshot.engine.phase === "ready" && !keptShown) {
    keptShown = true;
    await showKept();
  }
  document.body.dataset.phase = snapshot.engine.phase; // for tests: what is shown
}

// --- actions --------------------------------------------------------------------------------

$("tab-category").addEventListener("change", async (e) => {
  if (!e.target.value) return;
  try {
    const kept = await sorter("correct", tab.id, e.target.value, { url: tab.url });
    const done = kept.moved ? "Moved." : "Kept where it is: pinned tabs stay pinned.";
    if (kept.learned) message("tab-message", `${done} The model learns this the next time you are away.`, "ok");
    else if (kept.waiting) message("tab-message", `${done} The model is still loading: it learns this once it has loaded, the next time you are away.`, "ok");
    else if (snapshot?.engine?.phase === "failed") message("tab-message", `${done} The model is not available, so it does not learn this.${kept.moved ? " The tab stays where you put it." : ""}`, "warn");
    else message("tab-message", `${done} The model could not take this correction: ${kept.why}`, "warn");
  } catch (err) {
    message("tab-message", err.message, "bad");
  }
  await refresh();
});

$("sort-all").addEventListener("click", async () => {
  $("sort-all").disabled = true;
  message("sort-result", "Sorting…");
  try {
    const results = await sorter("sortAll", { includeUserGroups: $("include-user-groups").checked });
    const byModel = results.filter((r) => r.source === "model").length;
    message("sort-result", results.length ? `${results.length} tabs sorted, ${byModel} by the model, ${results.length - byModel} by the rules.` : "Nothing to sort.", "ok");
  } catch (e) {
    message("sort-result", e.message, "bad");
  } finally {
    $("sort-all").disabled = false;
  }
  await refresh();
});

$("include-user-groups").addEventListener("change", async (e) => {
  try {
    await sorter("configure", { includeUserGroups: e.target.checked });
  } catch (err) {
    message("sort-result", err.message, "bad");
  }
  await refresh(); // the box shows the setting as it is kept
});

$("pause").addEventListener("click", async () => {
  try {
    // a setting of the sorter's, so that the pause outlasts the engine and the browser
    await sorter("configure", { trainingPaused: status?.scheduler.state !== "paused" });
  } catch (e) {
    message("learning-message", e.message, "bad");
  }
  await refresh();
});

$("retry-model").addEventListener("click", async () => {
  $("retry-model").disabled = true;
  try {
    await sorter("retryModel");
  } catch (e) {
    message("engine-detail", e.message, "bad");
  } finally {
    $("retry-model").disabled = false;
  }
  await refresh();
});

$("dismiss-loss").addEventListener("click", async () => {
  try {
    await engineCall("acknowledge_loss");
  } catch (e) {
    message("learning-message", e.message, "bad");
  }
  await refresh();
});

$("reset").addEventListener("click", async () => {
  const button = $("reset");
  if (!resetArmed) {
    button.textContent = "Forget corrections? Click again";
    button.classList.add("danger");
    resetArmed = setTimeout(() => {
      resetArmed = null;
      button.textContent = "Reset to shipped model";
      button.classList.remove("danger");
    }, 4000);
    return;
  }
  clearTimeout(resetArmed);
  resetArmed = null;
  button.textContent = "Reset to shipped model";
  button.classList.remove("danger");
  try {
    const result = await engineCall("reset_tabs");
    await sorter("categoriesChanged", result.categories);
    message("learning-message", "Back to the shipped model and categories.", "ok");
  } catch (e) {
    message("learning-message", e.message, "bad");
  }
  await refresh();
});

$("export").addEventListener("click", async () => {
  try {
    // the adapter, its categories.json and corrected_sites.json (TabService.export_adapter)
    const { files } = await engineCall("export_adapter");
    const a = document.createElement("a");
    a.href = URL.createObjectURL(zip(files));
    a.download = "tab-sorter-adapter.zip";
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    message("learning-message", `Adapter exported: ${Object.keys(files).join(", ")}.`, "ok");
  } catch (e) {
    message("learning-message", e.message, "bad");
  }
});

function inPopup() {
  return chrome.extension.getViews({ type: "popup" }).includes(window);
}

$("import").addEventListener("click", () => {
  // a popup closes when the file chooser opens: pick the file in a tab instead
  if (inPopup()) chrome.tabs.create({ url: chrome.runtime.getURL("popup.html?page#import") });
  else $("import-file").click();
});

$("import-file").addEventListener("change", async (e) => {
  try {
    let files = {};
    for (const file of e.target.files) {
      const bytes = new Uint8Array(await file.arrayBuffer());
      if (file.name.endsWith(".zip")) Object.assign(files, await unzip(bytes));
      else files[file.name] = bytes;
    }
    files = Object.fromEntries(Object.entries(files).map(([name, data]) => [name.split("/").pop(), data]));
    // its categories.json and corrected_sites.json (what the export wrote) bring back the
    // categories it was trained with and the sites it learned the user's word for
    const result = await engineCall("import_adapter", { files });
    await sorter("categoriesChanged", result.categories);
    message("learning-message", `Adapter imported from ${[...e.target.files].map((f) => f.name).join(", ")}: ${result.categories.map((c) => c.name).join(", ")}.`, "ok");
  } catch (err) {
    message("learning-message", err.message, "bad");
  } finally {
    e.target.value = "";
  }
  await refresh();
});

$("add-category").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("new-category").value.trim();
  if (!name) return;
  editCategories(() => engineCall("add_category", { name }), `Added ${name}: move tabs into its group to teach the model.`)
    .then(() => { $("new-category").value = ""; });
});

// --- start ----------------------------------------------------------------------------------

if (params.has("page")) document.body.classList.add("as-page");
tab = await findTab();
await refresh();
setInterval(refresh, REFRESH_MS);
