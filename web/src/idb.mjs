// A database of one object store, used a transaction at a time: opened (the store made on
// first use), one transaction, closed. The training states (state_store.mjs) and the notice of
// lost data (storage_loss.mjs) keep their records so.
//
//   await transact("py_engine", "states", "readonly", (store) => store.get(key), onUpgrade)
//
// `work(store)` issues one request and the transaction resolves to its result once committed;
// `onUpgrade(event, name)` sees the open's upgradeneeded event first (storage_loss.mjs's
// noteDataLoss: Chromium reports a database it found corrupt and started empty there).

function open(name, storeName, onUpgrade) {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(name, 1);
    request.onupgradeneeded = (event) => {
      onUpgrade?.(event, name);
      request.result.createObjectStore(storeName);
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

export async function transact(name, storeName, mode, work, onUpgrade) {
  const db = await open(name, storeName, onUpgrade);
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(storeName, mode);
      const request = work(tx.objectStore(storeName));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
    });
  } finally {
    db.close();
  }
}
