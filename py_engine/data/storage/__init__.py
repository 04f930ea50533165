"""Where the data layer keeps what it must not lose: one small asynchronous interface over an
SQLite file (the host) and an IndexedDB database (the browser), with the layout in schema.py.

    store = open_store("queue.sqlite")      # host; in Pyodide a name: open_store("default")
    result = await atomically(store, work)  # work(tx): reads, then staged writes, all or nothing

A back end (sqlite_store.SQLiteStore, indexeddb_store.IndexedDBStore) has a `name` for
messages, close(), `lost` (None, or why the browser deleted a corrupt database and started it
empty: IndexedDB only), and two calls, each one transaction of its own:
    await store.read(queries)        -> (version, [result per query]), one consistent snapshot
    await store.write(ops, version)  -> True, or False (nothing written) when another write
                                        committed since `version`; the store's version advances
                                        by one with every write
Queries:  {"q": "get", "table", "keys": [key, ...]}                  -> [row or None, ...]
          {"q": "get_by", "table", "index", "values": [[...], ...]}  -> [row or None, ...]
          {"q": "scan", "table", "index": name or None, "prefix": [...], "after": key or None,
           "limit": n or None, "fields": [...] or None}             -> [row, ...]
          {"q": "count", "table", "index": name or None, "prefix": [...]} -> int
          {"q": "last", "table"}                                       -> the greatest key or None
          A scan walks an index in order (its fields, then the key) over the rows whose first
          fields equal `prefix`, or the table in key order (index None), then past the key
          `after`; `fields` picks what each row returns.
Ops:      {"op": "put", "table", "row"} (insert or replace by key), {"op": "insert", "table",
          "row"} (a new row: a row already under its key fails the whole write rather than be
          replaced), {"op": "delete", "table", "key"}, applied in the order given. A put that
          would give two rows one value of a unique index fails the whole write.

Why optimistic transactions: IndexedDB ends a transaction as soon as its requests run out,
so Python cannot hold one open across awaits. A Transaction therefore reads (each read at one
version), stages its writes, and commits them in one write that checks the version it read;
when another writer came between, atomically() runs the work again on fresh reads. A write is
thus one transaction on both back ends: it is stored whole or not at all, even when the process
or the page dies in the middle.
"""

import sys

from ..classification import DataError
from .schema import TABLES


class StoreError(DataError):
    """A store that cannot be opened or written; the message names it and says why."""


class StoreWarning(UserWarning):
    """Something happened to the stored data that the user should hear of (a database the
    browser found corrupt and started empty)."""


class Conflict(Exception):
    """Another writer committed between a transaction's reads (atomically() runs it again)."""


ATTEMPTS = 100


class Transaction:
    """Reads at one version of the store and the writes staged for it. Reads see the store as
    it was before this transaction: a staged write is not visible to them."""

    def __init__(self, store):
        self.store = store
        self.version = None
        self.ops = []

    async def read(self, *queries):
        version, results = await self.store.read(list(queries))
        if self.version is None:
            self.version = version
        elif version != self.version:
            raise Conflict()
        return results

    async def get(self, table, keys):
        return (await self.read({"q": "get", "table": table, "keys": list(keys)}))[0]

    async def get_one(self, table, key):
        return (await self.get(table, [key]))[0]

    async def get_by(self, table, index, values):
        return (await self.read({"q": "get_by", "table": table, "index": index,
                                 "values": [list(v) for v in values]}))[0]

    async def scan(self, table, index=None, prefix=(), after=None, limit=None, fields=None):
        return (await self.read(scan_query(table, index, prefix, after, limit, fields)))[0]

    async def scan_all(self, table, fields=None, page=1000):
        """Every row of `table` in key order, read page by page at this transaction's version
        (`fields`, when given, gain the key)."""
        name = TABLES[table].key
        if fields is not None and name not in fields:
            fields = (name, *fields)
        key = None
        while True:
            rows = await self.scan(table, after=key, limit=page, fields=fields)
            for row in rows:
                yield row
            if len(rows) < page:
                return
            key = rows[-1][name]

    async def count(self, table, index=None, prefix=()):
        return (await self.read({"q": "count", "table": table, "index": index,
                                 "prefix": list(prefix)}))[0]

    async def last(self, table):
        """The greatest key in `table`, or None when it is empty."""
        return (await self.read({"q": "last", "table": table}))[0]

    def put(self, table, row):
        self.ops.append({"op": "put", "table": table, "row": row})

    def insert(self, table, row):
        """Stage a new row: when its key is taken by the time the write commits, the whole
        write fails (StoreError) instead of replacing what is there."""
        self.ops.append({"op": "insert", "table": table, "row": row})

    def delete(self, table, key):
        self.ops.append({"op": "delete", "table": table, "key": key})


def scan_query(table, index=None, prefix=(), after=None, limit=None, fields=None):
    return {"q": "scan", "table": table, "index": index, "prefix": list(prefix), "after": after,
            "limit": limit, "fields": None if fields is None else list(fields)}


async def atomically(store, work, attempts=ATTEMPTS):
    """Run `await work(tx)` and commit what it staged as one write; run it again from fresh
    reads when another writer came first. Returns what `work` returned. An exception from
    `work` writes nothing."""
    for _ in range(attempts):
        tx = Transaction(store)
        try:
            result = await work(tx)
            if not tx.ops:
                return result
            if tx.version is None:
                await tx.read()
        except Conflict:
            continue
        if await store.write(tx.ops, tx.version):
            return result
    raise StoreError(f"{store.name}: other writers kept changing the store; {attempts} attempts "
                     "at one write failed")


def in_browser():
    return sys.platform == "emscripten"


def open_store(target):
    """A store: one given (anything with read and write), else in the browser the IndexedDB
    database named `target`, on the host the SQLite file at `target` (created when missing)."""
    if hasattr(target, "read") and hasattr(target, "write"):
        return target
    if in_browser():
        from .indexeddb_store import IndexedDBStore

        return IndexedDBStore(str(target))
    from .sqlite_store import SQLiteStore

    return SQLiteStore(target)
