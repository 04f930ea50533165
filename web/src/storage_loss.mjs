// Chromium keeps all of an origin's IndexedDB databases in one backing store. When it finds
// that store corrupt on opening it (a browser killed in the middle of a write can leave it so)
// it deletes it whole, starts it empty, and tells only the first open that follows, in its
// upgrade event's dataLoss. The data store (queue_store.mjs) and the training states
// (state_store.mjs) note it here, so that each of them can say so, whichever was opened first.
//
// Only that first open hears it, but the user may look later, from another page or after a
// restart: the message is kept in a database of its own ("py_engine_notices") until the user
// dismisses it (acknowledgeDataLoss), and pages and workers open at the time hear of a loss and
// of its dismissal on a BroadcastChannel.

import { transact } from "./idb.mjs";

const NOTICES = "py_engine_notices";
const STORE = "notices";
const KEY = "dataLoss";

let lost = null;
let recalled = null;    // the read of the kept notice, once per page or worker
let kept = Promise.resolve();   // the latest write of the notice
const channel = typeof BroadcastChannel === "undefined" ? null : new BroadcastChannel(NOTICES);
if (channel) {
  channel.onmessage = ({ data }) => {
    if (data?.lost && lost === null) lost = data.lost;
    else if (data?.dismissed) lost = null;
  };
}

function onNotices(mode, work) {
  return transact(NOTICES, STORE, mode, work, noteDataLoss);
}

// An open request's upgradeneeded event: remembers Chromium's message if it reports a loss,
// keeps it for later pages and tells the pages open now.
export function noteDataLoss(event, name) {
  if (event.dataLoss && event.dataLoss !== "none" && lost === null) {
    lost = event.dataLossMessage || `the browser lost its databases (${event.dataLoss})`;
    console.warn(`IndexedDB was started empty on opening ${name}: ${lost}`);
    const notice = { message: lost, at: new Date().toISOString() };
    kept = kept.then(() => onNotices("readwrite", (store) => store.put(notice, KEY)))
      .catch((e) => console.error(`could not keep the notice of lost data: ${e}`));
    channel?.postMessage({ lost });
  }
}

// Reads the kept notice once per page or worker (the stores call it on opening); resolves to
// the message, or null.
export function recallDataLoss() {
  recalled ??= (async () => {
    try {
      const notice = await onNotices("readonly", (store) => store.get(KEY));
      if (notice && lost === null) lost = notice.message;
    } catch (e) {
      console.error(`could not read the notice of lost data: ${e}`);
    }
  })();
  return recalled.then(() => lost);
}

// The user has read the message: it is no longer said, here or in any page of the origin.
export async function acknowledgeDataLoss() {
  await recallDataLoss();
  lost = null;
  const deleted = kept.then(() => onNotices("readwrite", (store) => store.delete(KEY)));
  kept = deleted.catch(() => {});
  await deleted;
  channel?.postMessage({ dismissed: true });
}

// Chromium's message, or null when no open reported a loss not yet dismissed.
export function dataLost() {
  return lost;
}
