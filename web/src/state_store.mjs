// IndexedDB for py_engine's saved training states (registered as the JS module
// "py_engine_state_store"; Python side: py_engine/train/state.py IndexedDBStateStore). A state is a set of
// files {name: Uint8Array} kept as one record under a key, written in one transaction: a page
// closed mid-save keeps the previous record. Pages, workers and the extension's offscreen
// document of one origin share the database.

import { transact as inStore } from "./idb.mjs";
import { noteDataLoss, recallDataLoss } from "./storage_loss.mjs";

const DB = "py_engine";
const STORE = "states";

async function transact(mode, work) {
  const result = await inStore(DB, STORE, mode, work, noteDataLoss);
  await recallDataLoss(); // a loss reported to an earlier page or worker, not yet dismissed
  return result;
}

// files: a plain object {name: Uint8Array}; the bytes are copied out of the wasm heap first.
export function putFiles(key, files) {
  const record = {};
  for (const [name, bytes] of Object.entries(files)) record[name] = new Uint8Array(bytes);
  return transact("readwrite", (store) => store.put(record, key));
}

// The record {name: Uint8Array}, or null when there is none.
export async function getFiles(key) {
  const found = await transact("readonly", (store) => store.get(key));
  return found === undefined ? null : found;
}

export function deleteFiles(key) {
  return transact("readwrite", (store) => store.delete(key));
}

export function listKeys() {
  return transact("readonly", (store) => store.getAllKeys());
}

// Chromium's message when it found the origin's databases corrupt and started them empty, else
// null (for py_engine/train/state.py).
export { dataLost as lost } from "./storage_loss.mjs";
