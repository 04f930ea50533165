// The extension's service worker: tab events, grouping (sorter.mjs) and message routing.
//
// Python cannot run here (a service worker may not import() at run time, and Chrome stops it
// whenever it likes), so the engine lives in the offscreen document (offscreen.mjs), which this
// worker creates and relays to (engine_link.mjs). Messages it answers, by `target`:
//
//   {target: "service-worker", type: "relay", message}      -> the offscreen document's answer
//   {target: "service-worker", type: "sorter", action, args} -> TabSorter[action](...args)
//   {target: "service-worker", type: "training"}           -> {idle: chrome.idle's state, paused}
//
// Listeners are registered synchronously when the worker starts (MV3 wakes it for them).
// `self.tabSorter` is the sorter, for tests and DevTools.

import { engineCall, ensureOffscreen, offscreenRequest } from "./engine_link.mjs";
import { RETRY_ALARM, TabSorter } from "./sorter.mjs";
import { benchmark } from "./tabs_api.mjs";

const sorter = new TabSorter();
self.tabSorter = sorter;

// The user is idle after this many seconds without input (chrome.idle), and then training runs.
const IDLE_AFTER_S = 60;

// What the popup may ask of the sorter.
const ACTIONS = new Set(["snapshot", "sortAll", "correct", "configure", "categoriesChanged", "upgrade", "retryModel"]);

// Test hooks: chrome.idle never changes headless, and a slice should not wait for idleness.
sorter.setIdleState = (state) => engineCall("set_idle_state", { state });
sorter.forceSlice = (budgetMs) => engineCall("force_slice", { budget_ms: budgetMs });
sorter.engine = (method, params) => engineCall(method, params);
sorter.watchdog = async (settings) => {
  const answer = await offscreenRequest({ type: "watchdog", ...settings });
  if (answer.error) throw new Error(answer.error.message);
  return answer;
};
sorter.benchmark = (tabs, options) => benchmark(tabs, options);

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (message?.target !== "service-worker") return false;
  let work;
  if (message.type === "relay") {
    // a document that cannot be made or reached is "unreachable" to the caller, as here
    work = ensureOffscreen().then(() => chrome.runtime.sendMessage({ ...message.message, target: "offscreen" }))
      .catch((e) => { throw Object.assign(new Error(`the engine could not be reached: ${e?.message ?? e}`), { kind: "unreachable" }); });
  } else if (message.type === "training") {
    work = chrome.idle.queryState(IDLE_AFTER_S).then((idle) => sorter.trainingWishes(idle));
  } else if (message.type === "sorter" && ACTIONS.has(message.action)) {
    work = sorter[message.action](...(message.args || []));
  } else {
    sendResponse({ relayError: { message: `unknown service-worker request ${JSON.stringify(message.type)} ${message.action || ""}`, kind: "bug" } });
    return false;
  }
  work.then((answer) => sendResponse(answer ?? null), (e) => sendResponse({ relayError: { message: String(e?.message ?? e), kind: e?.kind || "bug" } }));
  return true; // the answer comes later
});

const report = (e) => console.error("tab sorter:", e);
chrome.tabs.onUpdated.addListener((tabId, change, tab) => { sorter.onUpdated(tabId, change, tab).catch(report); });
chrome.tabs.onRemoved.addListener((tabId) => { sorter.onTabRemoved(tabId).catch(report); });
chrome.tabGroups.onRemoved.addListener((group) => { sorter.onGroupRemoved(group).catch(report); });
chrome.tabGroups.onUpdated.addListener((group) => { sorter.onGroupUpdated(group).catch(report); });

// Tabs the rules could not place while the model was over its budget: asked again later.
chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name === RETRY_ALARM) sorter.retryUnplaced().catch(report);
});

// Training runs while the user is away: chrome.idle's state goes to the engine's scheduler,
// with the user's pause.
chrome.idle.setDetectionInterval(IDLE_AFTER_S);
chrome.idle.onStateChanged.addListener((state) => { sorter.idleChanged(state).catch(() => {}); });

// The first sort: every open tab, by the rules at once while the model loads, then again by
// the model once it is ready.
async function sortEverything() {
  await sorter.sortAll();
  await sorter.upgrade();
}
chrome.runtime.onInstalled.addListener(() => { sortEverything().catch(report); });
chrome.runtime.onStartup.addListener(() => { sortEverything().catch(report); });

// Start the engine as soon as the worker runs, so that it is ready by the time anyone asks. It
// asks for chrome.idle's state itself as it starts ({type: "training"}); changes come above.
ensureOffscreen()
  .catch((e) => console.error("tab sorter: could not start the engine:", e));
