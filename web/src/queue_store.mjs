// IndexedDB for py_engine's data store: the training queue and the chat log (registered as the
// JS module "py_engine_queue"; Python side: py_engine/data/storage/indexeddb_store.py, layout:
// py_engine/data/storage/schema.py, which arrives here as JSON and builds the object stores).
// Every read and every write is one IndexedDB transaction over all the store's tables, so a
// write is kept whole or not at all, whatever happens to the page or worker in the middle.
// A write carries the version its reads saw and is refused (nothing written, {ok: false}) when
// another write has committed since. The database "py_engine_data/<name>" is shared by the
// pages, workers and the extension's documents of one origin.
// Chromium deletes the origin's databases when it finds them corrupt on opening one (a browser
// killed in the middle of a write can leave them so) and starts them empty, saying so only to
// that open (storage_loss.mjs, which keeps the message until the user dismisses it): every reply
// then carries it as `lost`, so nothing the user had vanishes without a word.

import { dataLost, noteDataLoss, recallDataLoss } from "./storage_loss.mjs";

const PREFIX = "py_engine_data/";
const META = "_meta"; // out-of-line key "version": the number of writes committed
const connections = new Map(); // name -> Promise<{db, tables}>

function sameFields(keyPath, fields) {
  return Array.isArray(keyPath) && keyPath.length === fields.length && keyPath.every((f, i) => f === fields[i]);
}

function upgrade(db, tx, schema) {
  if (!db.objectStoreNames.contains(META)) db.createObjectStore(META);
  for (const [name, table] of Object.entries(schema.tables)) {
    const store = db.objectStoreNames.contains(name)
      ? tx.objectStore(name)
      : db.createObjectStore(name, { keyPath: table.key });
    for (const [index, spec] of Object.entries(table.indexes)) {
      if (store.indexNames.contains(index)) {
        const have = store.index(index);
        if (sameFields(have.keyPath, spec.fields) && have.unique === spec.unique) continue;
        store.deleteIndex(index);
      }
      store.createIndex(index, spec.fields, { unique: spec.unique });
    }
  }
}

function connect(name, schemaText) {
  let pending = connections.get(name);
  if (!pending) {
    const schema = JSON.parse(schemaText);
    const opened = new Promise((resolve, reject) => {
      const request = indexedDB.open(PREFIX + name, schema.version);
      request.onupgradeneeded = (event) => {
        noteDataLoss(event, PREFIX + name);
        upgrade(request.result, request.transaction, schema);
      };
      request.onsuccess = () => {
        const db = request.result;
        const forget = () => connections.delete(name);
        db.onversionchange = () => { db.close(); forget(); };
        db.onclose = forget;
        resolve({ db, tables: [META, ...Object.keys(schema.tables)] });
      };
      request.onerror = () => { connections.delete(name); reject(request.error); };
      request.onblocked = () => {
        connections.delete(name);
        reject(new Error(`${PREFIX + name} is held open by an older version of the page; close it`));
      };
    });
    // a loss reported to an earlier page or worker, not yet dismissed, is said here too
    pending = opened.then(async (connection) => { await recallDataLoss(); return connection; });
    connections.set(name, pending);
  }
  return pending;
}

function keyRange(prefix, after) {
  if (after !== null && after !== undefined) return IDBKeyRange.lowerBound(after, true);
  if (!prefix || !prefix.length) return null;
  // Array keys compare element by element and an array sorts after every number and string,
  // so [...prefix, []] lies above every key that starts with prefix.
  return IDBKeyRange.bound(prefix, [...prefix, []]);
}

function pick(rows, fields) {
  if (!fields) return rows;
  return rows.map((row) => Object.fromEntries(fields.map((f) => [f, row[f] === undefined ? null : row[f]])));
}

function runQuery(tx, q, results, i) {
  const store = tx.objectStore(q.table);
  const source = q.index ? store.index(q.index) : store;
  const each = (keys, get) => {
    const out = new Array(keys.length).fill(null);
    results[i] = out;
    keys.forEach((key, j) => {
      const request = get(key);
      request.onsuccess = () => { out[j] = request.result === undefined ? null : request.result; };
    });
  };
  if (q.q === "get") each(q.keys, (key) => store.get(key));
  else if (q.q === "get_by") each(q.values, (value) => source.get(value));
  else if (q.q === "scan") {
    const request = source.getAll(keyRange(q.prefix, q.after), q.limit ?? undefined);
    request.onsuccess = () => { results[i] = pick(request.result, q.fields); };
  } else if (q.q === "last") {
    const request = store.openKeyCursor(null, "prev");
    request.onsuccess = () => { results[i] = request.result ? request.result.key : null; };
  } else if (q.q === "count") {
    const request = source.count(keyRange(q.prefix, null) ?? undefined);
    request.onsuccess = () => { results[i] = request.result; };
  } else throw new Error(`unknown query ${JSON.stringify(q.q)}`);
}

// A failed request is left unhandled, so it aborts its whole transaction (a handler calling
// preventDefault() would let the rest commit).
function settle(tx, resolve, reject, value) {
  const reply = (v) => {
    const lost = dataLost();
    return JSON.stringify(lost ? { ...v, lost } : v);
  };
  tx.oncomplete = () => resolve(reply(value()));
  tx.onabort = () => {
    const v = value();
    if (v && v.ok === false) resolve(reply(v));
    else reject(tx.error || new Error("IndexedDB transaction aborted"));
  };
}

// queriesText: JSON [query, ...]; resolves to JSON {version, results}, read in one transaction.
export async function read(name, schemaText, queriesText) {
  const { db, tables } = await connect(name, schemaText);
  const queries = JSON.parse(queriesText);
  return new Promise((resolve, reject) => {
    const tx = db.transaction(tables, "readonly");
    const results = new Array(queries.length).fill(null);
    let version = 0;
    const request = tx.objectStore(META).get("version");
    request.onsuccess = () => { version = request.result ?? 0; };
    try {
      queries.forEach((q, i) => runQuery(tx, q, results, i));
    } catch (error) {
      tx.abort();
      reject(error);
      return;
    }
    settle(tx, resolve, reject, () => ({ version, results }));
  });
}

// opsText: JSON [{op: "put" | "insert", table, row} | {op: "delete", table, key}, ...], applied
// in one transaction when the store's version is still `expect`; resolves to JSON {ok, version}.
// An insert whose key is taken fails (ConstraintError), and with it the whole transaction.
export async function write(name, schemaText, opsText, expect) {
  const { db, tables } = await connect(name, schemaText);
  const ops = JSON.parse(opsText);
  for (const op of ops) {
    if (!["put", "insert", "delete"].includes(op.op) || !tables.includes(op.table) || op.table === META) {
      throw new Error(`bad write op ${JSON.stringify(op).slice(0, 200)}`);
    }
  }
  return new Promise((resolve, reject) => {
    const tx = db.transaction(tables, "readwrite", { durability: "strict" });
    let outcome = null;
    const meta = tx.objectStore(META);
    const request = meta.get("version");
    request.onsuccess = () => {
      const current = request.result ?? 0;
      if (current !== expect) {
        outcome = { ok: false, version: current };
        tx.abort();
        return;
      }
      for (const op of ops) {
        const store = tx.objectStore(op.table);
        if (op.op === "put") store.put(op.row);
        else if (op.op === "insert") store.add(op.row);
        else store.delete(op.key);
      }
      meta.put(current + 1, "version");
      outcome = { ok: true, version: current + 1 };
    };
    settle(tx, resolve, reject, () => outcome);
  });
}

// The user has read the message of `lost`: replies no longer carry it (storage_loss.mjs).
export { acknowledgeDataLoss as acknowledgeLoss } from "./storage_loss.mjs";

// Deletes the whole store (every table): the page's "forget everything".
export async function remove(name) {
  const pending = connections.get(name);
  connections.delete(name);
  if (pending) (await pending.catch(() => null))?.db.close();
  return new Promise((resolve, reject) => {
    const request = indexedDB.deleteDatabase(PREFIX + name);
    request.onsuccess = () => resolve(true);
    request.onerror = () => reject(request.error);
    request.onblocked = () => reject(new Error(`${PREFIX + name} is open in another page; close it first`));
  });
}
