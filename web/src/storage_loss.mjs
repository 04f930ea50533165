// Chromium keeps all of an origin's IndexedDB databases in one backing store. When it finds
// that store corrupt on opening it (a browser killed in the middle of a write can leave it so)
// it deletes it whole, starts it empty, and tells only the first open that follows, in its
// upgrade event's dataLoss. The data store (queue_store.mjs) and the training states
// (state_store.mjs) note it here, so that each of them can say so, whichever was opened first.

let lost = null;

// An open request's upgradeneeded event: remembers Chromium's message if it reports a loss.
export function noteDataLoss(event, name) {
  if (event.dataLoss && event.dataLoss !== "none" && lost === null) {
    lost = event.dataLossMessage || `the browser lost its databases (${event.dataLoss})`;
    console.warn(`IndexedDB was started empty on opening ${name}: ${lost}`);
  }
}

// Chromium's message, or null when no open in this page or worker reported a loss.
export function dataLost() {
  return lost;
}
