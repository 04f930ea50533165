// The tab sorter: the service worker's part. It categorises tabs (tabs_api.mjs) as they load
// and all at once when asked, keeps them in one group per category and window (chrome.tabGroups,
// title = the category's name, its colour), and turns the user's own moves into corrections
// the engine learns from. Pinned tabs and the user's own groups are left alone unless asked.
//
// The service worker may stop at any time, so what the sorter knows (which groups are ours,
// what each tab was sorted as) lives in chrome.storage.session and is read back on wake-up;
// listeners are registered when the worker starts, as MV3 requires. Corrections waiting for the
// model are the user's words about pages, not about this session's tab ids: they are kept in
// IndexedDB (the database "tab_sorter"), where they outlive the browser until learned.

import { categoriseTabs, currentCategories, initialise, budget, modelBusy, useCategories } from "./tabs_api.mjs";
import { closeOffscreen, engineCall } from "./engine_link.mjs";
import { describe } from "./describe.mjs";
import { transact } from "./idb.mjs";
import { NO_GROUP, checkMaxGroups, groupChange, isWebPage, movable, planMoves, waitsForModel } from "./grouping.mjs";
import { CategoryList } from "./categories.mjs";

const SESSION_KEY = "sorter";
const CORRECTIONS = ["tab_sorter", "corrections", "unlearned"]; // database, store, key
const SETTINGS_KEY = "settings";
// trainingPaused: the user paused idle training in the popup (kept until they resume it)
export const DEFAULT_SETTINGS = { autoSort: true, maxGroups: 0, includeUserGroups: false, perTabMs: 50, minMs: 400, retryMs: 60_000, trainingPaused: false };
export const RETRY_ALARM = "sort-unplaced"; // asks the model again of the tabs the rules could not place
const SETTLE_MS = 250; // a loading tab's title and URL settle before it is categorised
const EXPECT_MS = 3000; // how long a group change we made may take to be reported
const ENGINE_TRIES = 3; // asks of an engine whose document went away, before corrections wait on

function hostOf(url) {
  try {
    return new URL(url).host;
  } catch {
    return "";
  }
}

export class TabSorter {
  constructor() {
    this.groups = {}; // groupId -> {category, windowId}: the groups we made
    this.tabs = {}; // tabId -> {category, source: "model" | "rules" | "user", host, placed?}
    this.settings = { ...DEFAULT_SETTINGS };
    this.expected = new Map(); // tabId -> time: a group change we are making
    this.pending = new Set(); // tabs waiting to be categorised
    // corrections made while the model was loading: {tabId, url, title, category, where}, given
    // to the engine once it is ready (it cannot take them before: the tab model is not loaded)
    this.unlearned = [];
    this.keptUnlearned = "[]"; // what IndexedDB holds of them, as JSON
    this.delivering = null; // the wait for the engine, then the delivery, in progress
    this.timer = null;
    this.work = Promise.resolve(); // tab-strip changes, one at a time
    this.events = []; // what happened lately (the popup and the tests read it)
    this.loaded = this.load();
    // a worker stopped (or the browser closed) while corrections waited for the model: they
    // wait again from here
    this.loaded.then(() => { if (this.unlearned.length) this.learnWhenReady(); }, () => {});
  }

  // --- state ---

  async load() {
    const session = (await chrome.storage.session.get(SESSION_KEY))[SESSION_KEY] || {};
    this.groups = session.groups || {};
    this.tabs = session.tabs || {};
    this.events = session.events || [];
    const [db, store, key] = CORRECTIONS;
    const kept = await transact(db, store, "readonly", (s) => s.get(key))
      .catch((e) => { console.error("tab sorter: the corrections waiting for the model could not be read:", e); });
    this.unlearned = kept ?? session.unlearned ?? []; // (a session of an older version kept them there)
    this.keptUnlearned = JSON.stringify(kept ?? []);
    const stored = (await chrome.storage.local.get(SETTINGS_KEY))[SETTINGS_KEY] || {};
    this.settings = { ...DEFAULT_SETTINGS, ...stored };
    budget.configure(budgetSettings(this.settings));
  }

  async save() {
    await chrome.storage.session.set({ [SESSION_KEY]: { groups: this.groups, tabs: this.tabs, events: this.events.slice(-50) } });
    const unlearned = JSON.stringify(this.unlearned);
    if (unlearned !== this.keptUnlearned) {
      const [db, store, key] = CORRECTIONS;
      await transact(db, store, "readwrite", (s) => s.put(JSON.parse(unlearned), key));
      this.keptUnlearned = unlearned;
    }
  }

  log(kind, detail) {
    this.events.push({ at: Date.now(), kind, ...detail });
    this.events = this.events.slice(-50);
  }

  serially(task) {
    const run = this.work.then(task);
    this.work = run.catch((e) => console.error("tab sorter:", e));
    return run;
  }

  async configure(options) {
    await this.loaded;
    const unknown = Object.keys(options).filter((k) => !(k in DEFAULT_SETTINGS));
    if (unknown.length) throw new Error(`unknown settings ${unknown.join(", ")}`);
    const settings = { ...this.settings, ...options };
    checkSettings(settings); // before anything changed
    budget.configure(budgetSettings(settings)); // ... and this checks the budget's numbers
    this.settings = settings;
    await chrome.storage.local.set({ [SETTINGS_KEY]: this.settings });
    if ("trainingPaused" in options) {
      // kept in the settings first: an engine that cannot be told now is told when it starts
      await engineCall(settings.trainingPaused ? "pause" : "resume")
        .catch((e) => console.warn("tab sorter: the engine will take the pause when it starts:", e));
    }
    await this.scheduleRetry({ reset: true }); // at the new budget's pace
    return this.settings;
  }

  // What the user wants of training, for an engine starting: whether they are away
  // (chrome.idle's state, `idle` from the service worker) and whether they paused it.
  async trainingWishes(idle) {
    await this.loaded;
    return { idle, paused: this.settings.trainingPaused };
  }

  // chrome.idle's new state for the engine, after the user's pause: an engine that could not
  // ask for trainingWishes as it started (it then counts the user active and not paused) learns
  // of a pause before the user goes away and it would train.
  async idleChanged(idle) {
    await this.loaded;
    await engineCall(this.settings.trainingPaused ? "pause" : "resume");
    await engineCall("set_idle_state", { state: idle });
  }

  // --- sorting ---

  // May the sorter place `tab`? Not pinned, not in a group of the user's (unless asked), and not
  // a tab the user put somewhere (it stays there until it goes to another site).
  placeable(tab, includeUserGroups) {
    return movable(tab, this.groups, { includeUserGroups }) && this.tabs[tab.id]?.source !== "user";
  }

  // Categorise `tabs` and move them into our groups; returns the results.
  async sort(tabs, { includeUserGroups = this.settings.includeUserGroups } = {}) {
    await this.loaded;
    const candidates = tabs.filter((t) => this.placeable(t, includeUserGroups));
    if (!candidates.length) return [];
    const onLate = (late) => this.serially(() => this.applyLate(candidates, late));
    const results = await categoriseTabs(candidates, this.settings.maxGroups, { onLate });
    await this.serially(() => this.apply(candidates, results, { includeUserGroups }));
    return results;
  }

  // The model's late answer for tabs the rules left ungrouped: placed if they still are.
  async applyLate(tabs, late) {
    const ungrouped = late.filter((r) => waitsForModel(this.tabs[r.tabId]));
    if (!ungrouped.length) return;
    const live = new Set((await chrome.tabs.query({ groupId: NO_GROUP })).map((t) => t.id));
    await this.apply(tabs, ungrouped.filter((r) => live.has(r.tabId)));
    this.log("late", { tabs: ungrouped.map((r) => ({ tabId: r.tabId, category: r.category })) });
    await this.save();
  }

  async sortAll(options = {}) {
    const tabs = await chrome.tabs.query({ windowType: "normal" });
    const results = await this.sort(tabs, options);
    this.log("sorted", { tabs: results.length, sources: countBy(results, "source") });
    await this.save();
    return results;
  }

  async apply(tabs, results, { includeUserGroups = this.settings.includeUserGroups } = {}) {
    const byId = new Map(tabs.map((t) => [t.id, t]));
    const categoryOf = {};
    for (const r of results) categoryOf[r.tabId] = r.category;
    await this.forgetMissingGroups();
    // tabs may have closed, been pinned, or been put in a group of the user's or placed by the
    // user since they were read (while the rules or the model answered): those stay where they are
    const live = (await chrome.tabs.query({})).filter((t) => byId.has(t.id) && this.placeable(t, includeUserGroups));
    const liveIds = new Set(live.map((t) => t.id));
    for (const move of planMoves(live, categoryOf, this.groups)) await this.move(move);
    for (const r of results) {
      if (!liveIds.has(r.tabId)) continue;
      const tab = byId.get(r.tabId);
      const known = this.tabs[r.tabId];
      // the rules' "no idea" does not undo what the model said of the same site (a late answer,
      // or one from before it went over its budget): the tab is still in that category's group
      if (!r.category && known?.category && known.source === "model" && known.host === hostOf(tab.url)) continue;
      // a tab the rules could not place is kept too (category null): the model sorts it later
      this.tabs[r.tabId] = { category: r.category, source: r.source, host: hostOf(tab.url) };
    }
    await this.save();
    await this.scheduleRetry();
  }

  // --- tabs the rules could not place ---

  // They stay ungrouped while the model is loading or over its budget; an alarm (the worker may
  // stop meanwhile) asks the model again once the budget lets it answer, and again after that
  // until each is placed. None waiting: no alarm.
  unplacedIds() {
    return Object.entries(this.tabs).filter(([, t]) => waitsForModel(t)).map(([id]) => Number(id));
  }

  async scheduleRetry({ reset = false } = {}) {
    if (!this.unplacedIds().length) {
      await chrome.alarms.clear(RETRY_ALARM);
      return;
    }
    if (!reset && (await chrome.alarms.get(RETRY_ALARM))) return;
    // never sooner than a second: a model still busy would otherwise wake the worker in a loop
    await chrome.alarms.create(RETRY_ALARM, { delayInMinutes: Math.max(1000, this.settings.retryMs) / 60_000 });
  }

  async retryUnplaced() {
    await this.loaded;
    const state = await initialise();
    if (state.phase === "failed") return []; // the rules are all there is: nothing to wait for
    if (modelBusy()) { // a late answer may place them yet
      await this.scheduleRetry({ reset: true });
      return [];
    }
    const tabs = [];
    for (const id of this.unplacedIds()) {
      const tab = await chrome.tabs.get(id).catch(() => null);
      if (tab && tab.groupId === NO_GROUP && movable(tab, this.groups, this.settings)) tabs.push(tab);
      else delete this.tabs[id]; // closed, pinned or grouped meanwhile: not ours to place now
    }
    const results = await this.sort(tabs); // reschedules itself while some are still unplaced
    if (results.length) this.log("retried", { tabs: results.map((r) => ({ tabId: r.tabId, category: r.category, source: r.source, reason: r.reason })) });
    await this.save();
    await this.scheduleRetry();
    return results;
  }

  async forgetMissingGroups() {
    const present = new Set((await chrome.tabGroups.query({})).map((g) => String(g.id)));
    for (const id of Object.keys(this.groups)) if (!present.has(id)) delete this.groups[id];
  }

  async move({ windowId, category, tabIds, groupId }) {
    const c = currentCategories().byId(category);
    if (!c) return;
    const now = Date.now();
    for (const id of tabIds) this.expected.set(id, now);
    try {
      if (groupId === null) {
        const id = await chrome.tabs.group({ tabIds, createProperties: { windowId } });
        await chrome.tabGroups.update(id, { title: c.name, color: c.colour });
        this.groups[id] = { category, windowId };
      } else {
        await chrome.tabs.group({ groupId, tabIds });
      }
    } catch (e) {
      // a tab closed or dragged meanwhile: the next event sorts what is left
      console.warn("tab sorter: could not group", tabIds, e.message);
    }
  }

  // --- events ---

  schedule(tabId) {
    this.pending.add(tabId);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.flush(), SETTLE_MS);
  }

  async flush() {
    const ids = [...this.pending];
    this.pending.clear();
    const tabs = (await Promise.all(ids.map((id) => chrome.tabs.get(id).catch(() => null)))).filter((t) => t && t.status === "complete");
    const results = await this.sort(tabs);
    if (results.length) {
      this.log("loaded", { tabs: results.map((r) => ({ tabId: r.tabId, category: r.category, source: r.source })) });
      await this.save();
    }
  }

  async onUpdated(tabId, change, tab) {
    await this.loaded;
    if ("groupId" in change) await this.onGroupChanged(tab, change.groupId);
    if (change.url && this.tabs[tabId] && this.tabs[tabId].host !== hostOf(change.url)) {
      delete this.tabs[tabId]; // another site: what the user said of the last one is moot
      await this.save(); // kept now: with autoSort off nothing else saves it before the worker stops
    }
    if (!this.settings.autoSort) return;
    if (change.status === "complete" || (change.title && tab.status === "complete")) this.schedule(tabId);
  }

  async onGroupChanged(tab, groupId) {
    const made = this.expected.get(tab.id);
    if (made !== undefined && Date.now() - made < EXPECT_MS) {
      this.expected.delete(tab.id);
      return;
    }
    const meaning = groupChange(groupId, this.groups, this.tabs[tab.id]);
    if (meaning.kind === "correction") {
      await this.learn(tab, meaning.category, "a tab moved into another group");
    } else if (meaning.kind === "placed") {
      this.tabs[tab.id] = { ...(this.tabs[tab.id] || {}), category: null, source: "user", host: hostOf(tab.url), placed: true };
      this.log("placed", { tabId: tab.id, groupId });
    }
    await this.save();
  }

  // The user says `tab` belongs in `category`: the engine learns it, the tab stays there.
  // Returns {learned: the engine took the correction, waiting: it will once the model has
  // loaded, why: what kept the engine from taking it}. A correction made while the model loads,
  // or while the engine's document is gone (closed or crashed: the next request makes it anew),
  // is kept (in IndexedDB, so a worker that stops or a browser closed meanwhile keeps it) and given
  // to the engine once it is ready; the user's word is not lost to a model still loading.
  async learn(tab, category, where) {
    this.tabs[tab.id] = { category, source: "user", host: hostOf(tab.url) };
    const correction = { tabId: tab.id, url: tab.url || "", title: tab.title || "", category, where };
    const state = await initialise();
    if (state.phase === "failed" && !state.unreachable) {
      this.log("correction-failed", { tabId: tab.id, category, error: state.error });
      return { learned: false, waiting: false, why: `the model is not available (${state.error})` };
    }
    if (state.phase === "ready") {
      const failed = await this.teach(correction);
      if (!failed?.unreachable) return { learned: failed === null, waiting: false, why: failed?.why };
    }
    // the tab's latest word replaces what was said of the same page before
    this.unlearned = this.unlearned.filter((c) => c.tabId !== tab.id || c.url !== correction.url);
    this.unlearned.push(correction);
    this.log("correction-waiting", { tabId: tab.id, category });
    await this.save();
    this.learnWhenReady();
    return { learned: false, waiting: true };
  }

  // Give one correction to the engine: null when it took it, else {why, unreachable: the
  // engine's document did not answer}; logged either way.
  async teach({ tabId, url, title, category, where }) {
    try {
      const queued = await engineCall("correct_tab", { url, title, category, where });
      this.log("correction", { tabId, category, text: queued.text });
      return null;
    } catch (e) {
      const unreachable = e.kind === "unreachable";
      this.log(unreachable ? "engine-unreachable" : "correction-failed", { tabId, category, error: e.message });
      return { why: e.message, unreachable };
    }
  }

  // Once the engine is ready, the corrections that waited for it are learned, in the order they
  // were made; an engine that failed to load can learn none of them, and they are let go. An
  // engine whose document went away meanwhile (unreachable) is asked again, as the request
  // makes the document anew; after ENGINE_TRIES such tries the corrections wait on, for the next
  // correction or the next start of the service worker.
  learnWhenReady() {
    this.delivering ??= (async () => {
      try {
        for (let tries = 0; this.unlearned.length && tries < ENGINE_TRIES; tries++) {
          const state = await initialise({ wait: true });
          if (state.unreachable) {
            this.log("engine-unreachable", { error: state.error, waiting: this.unlearned.length });
            continue;
          }
          while (this.unlearned.length) {
            const correction = this.unlearned[0];
            if (state.phase === "ready") {
              if ((await this.teach(correction))?.unreachable) break; // kept: asked again
            } else {
              this.log("correction-failed", { tabId: correction.tabId, category: correction.category, error: `the model is not available (${state.error})` });
            }
            // this one, not the first: a correction kept meanwhile may have replaced the list
            this.unlearned = this.unlearned.filter((c) => c !== correction);
            await this.save();
          }
        }
        await this.save();
      } catch (e) {
        console.error("tab sorter: corrections wait for the model:", e);
      } finally {
        // at once after the last look at the list: a correction kept later starts a new delivery
        this.delivering = null;
      }
    })();
    return this.delivering;
  }

  // The popup's choice of a category for a tab: learned, and the tab moved there, unless it is
  // pinned (grouping a pinned tab would unpin it; pinned tabs stay where the user put them).
  // `seen.url`: the address the user saw when choosing; a tab that has gone to another page
  // since is not corrected (the choice was for the page they saw). Returns what the sorter
  // keeps of the tab, what learn() says (`learned`, `waiting`, `why`), and `moved`: whether the
  // tab was put in its category's group.
  async correct(tabId, category, seen = {}) {
    await this.loaded;
    const tab = await chrome.tabs.get(tabId).catch(() => null);
    if (!tab) throw new Error("The tab is closed.");
    if (!isWebPage(tab.url)) throw new Error("Only web pages (http, https, file) are sorted.");
    if (seen.url !== undefined && tab.url !== seen.url) throw new Error("The tab shows another page now: choose again for this one.");
    if (!currentCategories()?.byId(category)) throw new Error(`no category ${describe(category)}`);
    const learning = await this.learn(tab, category, "a category chosen in the popup");
    if (!tab.pinned) {
      await this.serially(async () => {
        await this.forgetMissingGroups();
        for (const move of planMoves([tab], { [tabId]: category }, this.groups)) await this.move(move);
      });
    }
    await this.save();
    return { ...this.tabs[tabId], ...learning, moved: !tab.pinned };
  }

  // These three wake a stopped worker, and then run before load() has read what the sorter
  // knew back: they wait for it, or they would act on (and save) an empty state.
  async onGroupRemoved(group) {
    await this.loaded;
    delete this.groups[group.id];
    await this.save();
  }

  // A group of ours the user renamed or recoloured is theirs from then on.
  async onGroupUpdated(group) {
    await this.loaded;
    const ours = this.groups[group.id];
    const c = ours && currentCategories()?.byId(ours.category);
    if (c && (group.title !== c.name || group.color !== c.colour)) {
      delete this.groups[group.id];
      this.log("adopted", { groupId: group.id, title: group.title });
      await this.save();
    }
  }

  async onTabRemoved(tabId) {
    await this.loaded;
    delete this.tabs[tabId];
    this.expected.delete(tabId);
    await this.save();
  }

  // Tabs the rules sorted while the model was loading (or slow) are sorted again once it is
  // ready; those it puts elsewhere move.
  async upgrade() {
    await this.loaded;
    const state = await initialise({ wait: true });
    if (state.phase !== "ready") return [];
    await this.followEngineCategories(state.categories);
    const ids = Object.entries(this.tabs).filter(([, t]) => t.source === "rules").map(([id]) => Number(id));
    const tabs = (await Promise.all(ids.map((id) => chrome.tabs.get(id).catch(() => null)))).filter(Boolean);
    const results = await this.sort(tabs);
    if (results.length) this.log("upgraded", { tabs: results.length, sources: countBy(results, "source") });
    await this.save();
    return results;
  }

  // --- categories ---

  // The engine's categories are the model's labels. They can differ from those our groups were
  // made with: the engine's saved state was set aside (it could not be put back, or the
  // shipped model changed; service.py), so the model's labels are the shipped categories again.
  // The groups then follow the engine's.
  async followEngineCategories(list) {
    const cats = CategoryList.fromJSON(list);
    for (const [id, g] of Object.entries(this.groups)) {
      const group = await chrome.tabGroups.get(Number(id)).catch(() => null);
      const c = cats.byId(g.category);
      if (group && (!c || group.title !== c.name || group.color !== c.colour)) {
        this.log("categories-followed", { categories: cats.ids() });
        return this.categoriesChanged(list);
      }
    }
  }

  // After the categories changed (in the popup): our groups take the new names and colours; the
  // tabs of a removed category are ungrouped, then sorted again (not awaited).
  async categoriesChanged(list) {
    await this.loaded;
    const cats = useCategories(list);
    const orphans = [];
    await this.serially(async () => {
      await this.forgetMissingGroups();
      for (const [id, g] of Object.entries(this.groups)) {
        const c = cats.byId(g.category);
        if (c) {
          await chrome.tabGroups.update(Number(id), { title: c.name, color: c.colour });
        } else {
          const tabs = await chrome.tabs.query({ groupId: Number(id) });
          for (const t of tabs) this.expected.set(t.id, Date.now());
          if (tabs.length) await chrome.tabs.ungroup(tabs.map((t) => t.id));
          orphans.push(...tabs.map((t) => ({ ...t, groupId: NO_GROUP })));
          delete this.groups[id];
        }
      }
    });
    for (const t of orphans) delete this.tabs[t.id];
    await this.save();
    // sorted again in the background: the model may take a while
    if (orphans.length) this.sort(orphans).catch((e) => console.error("tab sorter:", e));
  }

  // --- what the popup shows ---

  async snapshot() {
    await this.loaded;
    const state = await initialise();
    return { engine: state, groups: this.groups, tabs: this.tabs, settings: this.settings, budget: budget.status(), events: this.events.slice(-20), unlearned: this.unlearned.length };
  }

  // The user asks for the model again after it failed (no WebGPU then, a GPU lost too often):
  // the engine's document is made anew; once the model is ready, the tabs the rules sorted
  // meanwhile are sorted by it. Returns the new engine's first state.
  async retryModel() {
    await this.loaded;
    await closeOffscreen();
    const state = await initialise();
    this.log("retried-model", { phase: state.phase });
    await this.save();
    this.upgrade().catch((e) => console.error("tab sorter:", e));
    return state;
  }

  // The engine restarted from scratch (its state comes back from IndexedDB): what tests use to
  // show that what was learned is kept.
  async restartEngine() {
    await closeOffscreen();
    return initialise({ wait: true });
  }
}

// The settings that are not the budget's: a wrong type would otherwise be kept, and act later
// (a maxGroups of "3" limits nothing, an autoSort of "no" sorts).
function checkSettings(settings) {
  for (const key of ["autoSort", "includeUserGroups", "trainingPaused"]) {
    if (typeof settings[key] !== "boolean") throw new Error(`${key} must be true or false, got ${describe(settings[key])}`);
  }
  checkMaxGroups(settings.maxGroups);
}

function budgetSettings({ perTabMs, minMs, retryMs }) {
  return { perTabMs, minMs, retryMs };
}

function countBy(items, key) {
  const out = {};
  for (const item of items) out[item[key]] = (out[item[key]] || 0) + 1;
  return out;
}
