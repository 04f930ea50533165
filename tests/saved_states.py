"""The saved training states in a page's IndexedDB (web/src/state_store.mjs), for the browser
tests: page.evaluate(STATES_JS, None) gives {key: {file name: its length in bytes}};
page.evaluate(STATES_JS, {"key", "name", "keep"}) first cuts that file to its first `keep`
bytes, in place (a state spoilt as storage failing mid-write would leave it)."""

STATES_JS = """(work) => new Promise((resolve, reject) => {
    const open = indexedDB.open("py_engine");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
        const tx = open.result.transaction("states", "readwrite");
        const store = tx.objectStore("states");
        const keys = store.getAllKeys();
        keys.onsuccess = () => {
            const records = {};
            let left = keys.result.length;
            if (!left) resolve({});
            for (const key of keys.result) {
                const get = store.get(key);
                get.onsuccess = () => {
                    records[key] = get.result;
                    if (--left === 0) {
                        if (work) {
                            const record = records[work.key];
                            record[work.name] = record[work.name].slice(0, work.keep);
                            store.put(record, work.key);
                        }
                        tx.oncomplete = () => resolve(Object.fromEntries(Object.entries(records).map(
                            ([k, files]) => [k, Object.fromEntries(Object.entries(files).map(([n, b]) => [n, b.length]))])));
                    }
                };
            }
        };
    };
})"""
