// The overview page: every window's tab strip as groups of tabs, with what sorted each tab
// (the model, the rules, or you) — the tab strip itself in one page, which also shows it where
// there is no window to look at (a headless browser). Each web page links to the popup for
// that tab (popup.html?page&tab=ID), where choosing another category is a correction.

import { NO_GROUP, isWebPage, notSorted } from "./grouping.mjs";

const $ = (id) => document.getElementById(id);

function sorter(action, ...args) {
  return chrome.runtime.sendMessage({ target: "service-worker", type: "sorter", action, args });
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function host(url) {
  try {
    return new URL(url).host + new URL(url).pathname;
  } catch {
    return url;
  }
}

const HOW = { model: "model", rules: "rules", user: "you" };

// A tab's line: its title, what sorted it (`info`, the sorter's record; a tab it could not
// place is "not sorted"), a link to change its category (a web page not pinned: the sorter
// leaves pinned tabs where they are) and its address.
function tabLine(t, info) {
  const name = t.title || t.url;
  const change = isWebPage(t.url) && !t.pinned
    ? el("a", { className: "change", href: `popup.html?page&tab=${t.id}`, target: "_blank", title: `Change the category of ${name}` }, "change")
    : "";
  const why = !info ? "" : notSorted(info) ? "not sorted" : HOW[info.source] || "";
  return el("li", {}, `${t.pinned ? "📌 " : ""}${name}`, why ? el("span", { className: "why" }, ` · ${why}`) : "",
    change, el("span", { className: "url" }, host(t.url)));
}

// A group made between the two reads below has no entry in `groups`: it is drawn grey and
// untitled until the event that made it renders the page again.
const UNKNOWN_GROUP = { title: "", color: "grey" };

async function render() {
  const snapshot = await sorter("snapshot");
  const groups = await chrome.tabGroups.query({});
  const tabs = await chrome.tabs.query({ windowType: "normal" });
  const self = await chrome.tabs.getCurrent();
  const shown = tabs.filter((t) => t.id !== self?.id);
  const windows = [...new Set(shown.map((t) => t.windowId))];
  $("windows").replaceChildren(...windows.map((windowId) => {
    const inWindow = shown.filter((t) => t.windowId === windowId);
    const strip = el("div", { className: "strip" });
    const cards = el("div", { className: "groups" });
    const seen = new Set();
    for (const t of inWindow) {
      if (t.groupId !== NO_GROUP && !seen.has(t.groupId)) {
        seen.add(t.groupId);
        const g = groups.find((x) => x.id === t.groupId) || UNKNOWN_GROUP;
        const members = inWindow.filter((x) => x.groupId === t.groupId);
        const ours = String(t.groupId) in snapshot.groups;
        strip.append(el("span", { className: "chip", style: `background: var(--${g.color})` }, g.title || "(untitled)"));
        const title = el("h3", {}, el("span", { className: "dot", style: `background: var(--${g.color})` }), g.title || "(untitled)",
          el("span", { className: "why" }, `${ours ? "" : "your group, "}${plural(members.length, "tab")}`));
        cards.append(el("div", { className: "group" }, title, el("ul", {}, ...members.map((m) => tabLine(m, snapshot.tabs[m.id])))));
      } else if (t.groupId === NO_GROUP) {
        strip.append(el("span", { className: `tab${t.pinned ? " pinned" : ""}` }, el("span", {}, t.pinned ? "📌" : t.title || t.url)));
      }
    }
    const loose = inWindow.filter((t) => t.groupId === NO_GROUP);
    if (loose.length) {
      cards.append(el("div", { className: "group" }, el("h3", {}, "Not in a group"),
        el("ul", {}, ...loose.map((m) => tabLine(m, snapshot.tabs[m.id])))));
    }
    return el("div", { className: "window" }, strip, cards);
  }));
  const counts = {};
  for (const info of Object.values(snapshot.tabs)) if (info.category) counts[info.source] = (counts[info.source] || 0) + 1;
  $("summary").textContent = `${plural(shown.length, "tab")} in ${plural(groups.length, "group")}. Sorted by the model: ${counts.model || 0}, by the rules: ${counts.rules || 0}, by you: ${counts.user || 0}.`;
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
}

// One render at a time, and one more after it for whatever changed while it ran: renders that
// overlapped could finish out of order and leave an older strip on the page.
let rendering = null;
let again = false;
function rerender() {
  if (rendering) {
    again = true;
    return rendering;
  }
  rendering = (async () => {
    try {
      do {
        again = false;
        try {
          await render();
        } catch (e) {
          $("summary").textContent = `Could not read the tabs: ${e.message}`;
        }
      } while (again);
    } finally {
      rendering = null;
    }
  })();
  return rendering;
}

await rerender();
// every change to the tab strip: a closed, opened, moved or regrouped tab, a group made or gone
for (const event of ["onCreated", "onRemoved", "onUpdated", "onMoved", "onAttached", "onDetached"]) {
  chrome.tabs[event].addListener(() => rerender());
}
for (const event of ["onCreated", "onRemoved", "onUpdated", "onMoved"]) {
  chrome.tabGroups[event].addListener(() => rerender());
}
// what the sorter knows of each tab (who sorted it) changes without the strip changing: a
// category chosen for a pinned tab; the sorter keeps it in chrome.storage.session
chrome.storage.session.onChanged.addListener(() => rerender());
