// What to do with the tab strip, decided without touching it (the service worker carries it
// out with chrome.tabs and chrome.tabGroups): which tabs go into which of our groups, how a
// result is kept within a number of groups, and what a group change the user made means.
// Pure functions over plain data, tested in Node.

import { describe } from "./describe.mjs";

export const NO_GROUP = -1; // chrome.tabGroups.TAB_GROUP_ID_NONE

// Whether `url` is a web page (http, https, file): the only tabs sorted, and corrected.
export function isWebPage(url) {
  return /^(https?|file):/i.test(url || "");
}

// What the sorter's record of a tab ({category, source}) says. waitsForModel: the rules could
// not place it, and the sorter asks the model again. notSorted: in no category, and not put
// anywhere by the user (the popup and the overview say "not sorted").
export function waitsForModel(record) {
  return record?.source === "rules" && !record.category;
}

export function notSorted(record) {
  return Boolean(record) && !record.category && record.source !== "user";
}

// Whether the sorter may move `tab` ({pinned, groupId, url}): never a pinned tab; a tab in a
// group we did not make only when `includeUserGroups`; only web pages (http, https, file).
export function movable(tab, ourGroups, { includeUserGroups = false } = {}) {
  if (tab.pinned) return false;
  if (!isWebPage(tab.url)) return false;
  const inUserGroup = tab.groupId !== NO_GROUP && tab.groupId !== undefined && !(String(tab.groupId) in ourGroups);
  return includeUserGroups || !inUserGroup;
}

// A number of groups to keep to, as the sorter's settings and categoriseTabs take it: a whole
// number >= 0 (0: no limit). Throws a message naming `name` otherwise.
export function checkMaxGroups(value, name = "maxGroups") {
  if (!(Number.isInteger(value) && value >= 0)) {
    throw new Error(`${name} must be a whole number >= 0 (0: no limit), got ${describe(value)}`);
  }
}

// Keep at most `maxGroups` categories (the most common; ties to the earlier in `order`): a
// result whose category is dropped takes the kept one the model thought likeliest, or none
// (the rules give no likelihoods). results: [{category, probs|null, ...}] -> the same, changed.
export function limitGroups(results, maxGroups, order = []) {
  if (!maxGroups || maxGroups <= 0) return results;
  const counts = new Map();
  for (const r of results) if (r.category) counts.set(r.category, (counts.get(r.category) || 0) + 1);
  const rank = (c) => { const i = order.indexOf(c); return i < 0 ? order.length : i; };
  const kept = new Set([...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || rank(a) - rank(b)).slice(0, maxGroups));
  return results.map((r) => {
    if (!r.category || kept.has(r.category)) return r;
    if (!r.probs) return { ...r, category: null, limited: true };
    const best = [...kept].sort((a, b) => (r.probs[b] ?? 0) - (r.probs[a] ?? 0))[0] ?? null;
    return { ...r, category: best, confidence: best ? r.probs[best] : null, limited: true };
  });
}

// The moves that put each tab into our group of its category in its window:
// [{windowId, category, tabIds, groupId}] (groupId null: a new group to make). tabs:
// [{id, windowId, groupId}]; categoryOf: {tabId: category id | null}; ourGroups: {groupId:
// {category, windowId}}. A tab already in the right group, or without a category, stays.
export function planMoves(tabs, categoryOf, ourGroups) {
  const moves = new Map();
  for (const tab of tabs) {
    const category = categoryOf[tab.id];
    if (!category) continue;
    const current = ourGroups[tab.groupId];
    if (current && current.category === category && current.windowId === tab.windowId) continue;
    const key = `${tab.windowId}/${category}`;
    if (!moves.has(key)) {
      const existing = Object.entries(ourGroups).find(([, g]) => g.category === category && g.windowId === tab.windowId);
      moves.set(key, { windowId: tab.windowId, category, tabIds: [], groupId: existing ? Number(existing[0]) : null });
    }
    moves.get(key).tabIds.push(tab.id);
  }
  return [...moves.values()];
}

// What a tab's move into group `groupId` means, when the sorter did not make it:
// {kind: "correction", category} into another of our groups than the one its category
// gave; {kind: "kept"} into our group of its own category; {kind: "placed"} out of our
// groups (into the user's group or none): the user decides where it lives from now on.
export function groupChange(groupId, ourGroups, known) {
  const group = ourGroups[groupId];
  if (group) {
    if (known && known.category === group.category) return { kind: "kept" };
    return { kind: "correction", category: group.category };
  }
  return { kind: "placed" };
}
