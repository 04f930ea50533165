// The tab categorisation API for the extension's own code (the service worker's sorter, the
// popup, any extension page):
//
//   import { initialise, categoriseTabs, benchmark } from "./tabs_api.mjs";
//   await initialise();                                  // {phase, adapter, categories, ...}
//   const results = await categoriseTabs(tabs, 5);       // tabs: [{id, url, title}]
//   // [{tabId, category: "dev", name: "Dev", colour: "blue", confidence, source: "model"}, ...]
//   await benchmark(tabs);                               // latency per tab and per batch
//
// categoriseTabs never waits on a slow model: the model answers when it is loaded and its
// measured latency fits the budget (latency.mjs), within a deadline; otherwise the rule set
// answers (rules.mjs), at once, and where there is no model at all (no WebGPU) it guesses for
// the tabs no rule places. The engine itself lets the rules answer for a tab its model is
// unsure of (source "rules" in the model's answer; py_engine/tabs/answer.py). Results name the category by id (stable across renames) and
// by its current name and colour.

import { CategoryList } from "./categories.mjs";
import { describe } from "./describe.mjs";
import { EngineError, engineCall, offscreenRequest } from "./engine_link.mjs";
import { checkMaxGroups, limitGroups } from "./grouping.mjs";
import { LatencyBudget } from "./latency.mjs";
import { categorise as byRules, parseRules } from "./rules.mjs";

const MODEL = "model/";
export const BATCH = 50; // tabs per request to the model

export const budget = new LatencyBudget();
let rules = null;
let categories = null; // CategoryList, as the engine last reported them
let engineState = { phase: "starting" };
let modelCalls = 0; // model calls not answered yet (late ones included)

// Is the model still working on a call (perhaps one whose answer came too late)?
export function modelBusy() {
  return modelCalls > 0;
}

async function bundled(name) {
  const response = await fetch(chrome.runtime.getURL(MODEL + name));
  if (!response.ok) throw new Error(`${MODEL}${name}: HTTP ${response.status}`);
  return response.json();
}

// The engine's state ({phase: "starting" | "loading" | "ready" | "failed", error, adapter,
// model, categories, timings}); `wait`: once the model is loaded or failed to load. A request
// the offscreen document did not answer (closed or gone meanwhile) is phase "failed" with
// `unreachable`: the next request makes the document anew.
export async function initialise({ wait = false } = {}) {
  if (!rules) {
    const manifest = await bundled("manifest.json");
    rules = parseRules(await bundled(manifest.rules), await bundled(manifest.listed_domains),
      manifest.word_weights ? await bundled(manifest.word_weights) : null);
  }
  try {
    engineState = await offscreenRequest({ type: "state", wait });
  } catch (e) {
    engineState = { phase: "failed", error: e.message, unreachable: true };
  }
  if (engineState.categories) {
    useCategories(engineState.categories);
  } else if (!categories) {
    const cached = globalThis.chrome?.storage ? (await chrome.storage.local.get("categories")).categories : null;
    categories = CategoryList.fromJSON(cached || (await bundled("categories.json")));
  }
  return { ...engineState, categories: categories.items, budget: budget.status() };
}

// Take the categories the engine reports (after an edit); kept for the rules while it loads.
export function useCategories(list) {
  categories = CategoryList.fromJSON(list);
  if (globalThis.chrome?.storage) chrome.storage.local.set({ categories: categories.items }).catch(() => {});
  return categories;
}

export function currentCategories() {
  return categories;
}

function named(result) {
  const c = result.category ? categories.byId(result.category) : null;
  return { ...result, category: c ? c.id : null, name: c ? c.name : null, colour: c ? c.colour : null };
}

// The rules' answer for a tab; where no model will ever answer (the engine failed: no
// WebGPU), with the word weights' guess for a tab no rule places (rules.py, step 7), since a
// tab left ungrouped would stay so. A model that is loading or slow, or whose document is made
// anew, places such tabs later.
function rulesFor(tab) {
  const id = byRules(rules, tab.url || "", tab.title || "", { guess: engineState.phase === "failed" && !engineState.unreachable });
  return { tabId: tab.id, category: id && categories.byId(id) ? id : null, confidence: null, probs: null, source: "rules" };
}

function within(promise, ms) {
  let timer;
  const late = new Promise((resolve) => { timer = setTimeout(() => resolve(null), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function byModel(tabs) {
  const n = tabs.length;
  if (engineState.phase !== "ready") await initialise();
  if (engineState.phase !== "ready") {
    return { reason: engineState.phase === "failed" && !engineState.unreachable ? `model unavailable: ${engineState.error}` : "model loading" };
  }
  if (!budget.allows(n)) return { reason: "model over its budget" }; // not asked: slow lately
  const started = performance.now();
  const epoch = budget.epoch;
  const call = engineCall("categorise", { tabs: tabs.map((t) => ({ url: t.url || "", title: t.title || "" })) });
  modelCalls += 1;
  call.finally(() => { modelCalls -= 1; }).catch(() => {});
  // a late answer still tells the budget what the model takes
  call.then(() => budget.record(n, performance.now() - started, epoch), () => {});
  const answer = await within(call.catch((e) => ({ error: e })), budget.deadlineMs(n));
  if (answer === null) return { reason: "model too slow", late: call }; // asked, but late
  if (answer.error) {
    // the engine is being made anew (its document, or the engine after the GPU was lost): the
    // next batch asks for its state first, and waits for the model like at the start
    if (answer.error.kind === "unreachable") engineState = { phase: "failed", error: answer.error.message, unreachable: true };
    return { reason: `model failed: ${answer.error.message}` };
  }
  return { results: answer.results, modelMs: answer.model_ms, ms: performance.now() - started };
}

// What callers pass for tabs: an array of objects whose url and title, where given, are text
// (chrome.tabs leaves them out of a tab it may not read). Throws a message naming the tab.
function checkTabs(tabs, { nonEmpty = false } = {}) {
  if (!Array.isArray(tabs)) throw new TypeError(`tabs must be an array of {id, url, title}, got ${describe(tabs)}`);
  if (nonEmpty && !tabs.length) throw new TypeError("tabs must hold at least one tab");
  tabs.forEach((tab, i) => {
    if (!tab || typeof tab !== "object") throw new TypeError(`tabs[${i}] must be an object {id, url, title}, got ${describe(tab)}`);
    for (const key of ["url", "title"]) {
      if (tab[key] != null && typeof tab[key] !== "string") throw new TypeError(`tabs[${i}].${key} must be text, got ${describe(tab[key])}`);
    }
  });
}

function checkCount(value, name) {
  if (!(Number.isInteger(value) && value >= 1)) throw new TypeError(`${name} must be a whole number >= 1, got ${describe(value)}`);
}

// Categorise tabs ([{id, url, title}]) into at most `maxGroups` categories (0: no limit).
// `onLate(results)`: when the model answered too late, what it said of the tabs the rules
// gave no category (they are ungrouped: placing them now moves nothing the user has seen).
// Wrong arguments are refused before anything is asked.
export async function categoriseTabs(tabs, maxGroups = 0, { onLate = null } = {}) {
  checkTabs(tabs);
  checkMaxGroups(maxGroups);
  if (onLate !== null && typeof onLate !== "function") throw new TypeError(`onLate must be a function, got ${describe(onLate)}`);
  if (!rules || !categories) await initialise();
  const out = [];
  for (let start = 0; start < tabs.length; start += BATCH) {
    const batch = tabs.slice(start, start + BATCH);
    const model = await byModel(batch);
    const first = out.length;
    batch.forEach((tab, i) => {
      const m = model.results?.[i];
      if (m && m.category && categories.byId(m.category)) {
        out.push({ tabId: tab.id, category: m.category, confidence: m.confidence, probs: m.probs, source: m.source });
      } else {
        out.push({ ...rulesFor(tab), reason: model.reason || "model gave no category" });
      }
    });
    if (model.late && onLate) {
      const unplaced = batch.map((tab, i) => [tab, out[first + i]]).filter(([, r]) => !r.category);
      if (unplaced.length) {
        model.late.then((answer) => {
          const late = unplaced.map(([tab]) => answer.results[batch.indexOf(tab)])
            .map((m, k) => ({ tabId: unplaced[k][0].id, category: m.category && categories.byId(m.category) ? m.category : null,
              confidence: m.confidence, probs: m.probs, source: m.source, late: true }))
            .filter((r) => r.category);
          if (late.length) onLate(late.map(named));
        }, () => {});
      }
    }
  }
  return limitGroups(out, maxGroups, categories.ids()).map(named);
}

// Latency of the model on `tabs` ([{url, title}], e.g. 50 of them): one tab at a time
// (`singles` of them), then the whole batch, `rounds` times; the rules for comparison.
export async function benchmark(tabs, { rounds = 3, singles = 10 } = {}) {
  checkTabs(tabs, { nonEmpty: true });
  checkCount(rounds, "rounds");
  checkCount(singles, "singles");
  if (!rules || !categories) await initialise();
  const state = await initialise({ wait: true });
  if (state.phase !== "ready") throw new EngineError({ message: `the model is not ready (${state.phase}: ${state.error})`, kind: "user" });
  const plain = tabs.map((t) => ({ url: t.url || "", title: t.title || "" }));
  await engineCall("categorise", { tabs: plain.slice(0, 1) }); // warm: pipelines compiled
  const single = [];
  for (const tab of plain.slice(0, singles)) {
    const t0 = performance.now();
    await engineCall("categorise", { tabs: [tab] });
    single.push(performance.now() - t0);
  }
  const batch = [];
  const modelMs = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    const answer = await engineCall("categorise", { tabs: plain });
    batch.push(performance.now() - t0);
    modelMs.push(answer.model_ms);
  }
  const t0 = performance.now();
  for (let r = 0; r < 20; r++) for (const tab of plain) byRules(rules, tab.url, tab.title);
  const rulesMs = (performance.now() - t0) / (20 * plain.length);
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const p95 = (xs) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(0.95 * xs.length) - 1)];
  return {
    adapter: state.adapter,
    tabs: plain.length,
    single: { n: single.length, meanMs: single.reduce((a, b) => a + b, 0) / single.length, p95Ms: p95(single) },
    batch: { n: plain.length, rounds, medianMs: median(batch), perTabMs: median(batch) / plain.length, modelMs: median(modelMs) },
    rules: { perTabMs: rulesMs },
  };
}
