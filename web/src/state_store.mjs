// IndexedDB for py_engine's saved training states (registered as the JS module
// "py_engine_state_store"; Python side: py_engine/train/state.py IndexedDBStateStore). A state is a set of
// files {name: Uint8Array} kept as one record under a key, written in one transaction: a page
// closed mid-save keeps the previous record. Pages, workers and the extension's offscreen
// document of one origin share the database.

import { noteDataLoss, recallDataLoss } from "./storage_loss.mjs";

const DB = "py_engine";
const STORE = "states";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = (event) => {
      noteDataLoss(event, DB);
      request.result.createObjectStore(STORE);
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function transact(mode, work) {
  const db = await open();
  await recallDataLoss(); // a loss reported to an earlier page or worker, not yet dismissed
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
    });
  } finally {
    db.close();
  }
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
