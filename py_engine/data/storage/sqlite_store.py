"""The data store in an SQLite file (host only: Pyodide's core has no sqlite3).

File format: one SQL table per table of schema.py with the key and every indexed field as
columns plus `row`, the whole row as JSON text; an index per schema index (its fields, then
the key); `_meta` holding the store's write version. PRAGMA application_id marks the file as a
py_engine data store and user_version is the layout's version. The journal is a write-ahead
log with synchronous=FULL: a write that returned is on disk, and a process killed in the middle
of one leaves the file as it was before it.
"""

import json
import sqlite3
from pathlib import Path

from . import StoreError
from .schema import TABLES, VERSION

APPLICATION_ID = 0x70794531   # "pyE1"
CHUNK = 500                   # keys per IN (...) query, under SQLite's variable limit


def _name(text):
    return '"' + text.replace('"', '""') + '"'


def _dumps(row):
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class SQLiteStore:
    lost = None         # SQLite raises on a corrupt file rather than start it empty

    def __init__(self, path):
        self.name = str(path)
        if self.name != ":memory:":
            path = Path(path)
            if path.is_dir():
                raise StoreError(f"{path} is a directory, not a data store file")
            if not path.parent.is_dir():
                raise StoreError(f"{path}: no directory {path.parent}")
        try:
            # isolation_level None: the store begins and commits its transactions itself.
            # It may be used from another thread than the one that opened it (an event loop
            # running elsewhere), by one thread at a time.
            self.db = sqlite3.connect(self.name, isolation_level=None, timeout=30,
                                      check_same_thread=False)
            self._prepare()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.name}: not a py_engine data store ({e})") from None

    def _prepare(self):
        db = self.db
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app != APPLICATION_ID and (app or tables):
            raise StoreError(f"{self.name}: an SQLite file of another program, not a py_engine "
                             "data store")
        if version > VERSION:
            raise StoreError(f"{self.name}: a data store of a newer py_engine (layout {version}; "
                             f"this one reads {VERSION})")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        if app == APPLICATION_ID and version == VERSION:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value)")
            db.execute("INSERT OR IGNORE INTO _meta VALUES ('version', 0)")
            for table, spec in TABLES.items():
                columns = [f"{_name(spec.key)} PRIMARY KEY"] + [_name(c) for c in spec.columns()[1:]]
                db.execute(f"CREATE TABLE IF NOT EXISTS {_name(table)} "
                           f"({', '.join(columns)}, row TEXT NOT NULL)")
                for index, ix in spec.indexes.items():
                    # rows in index order, then key order; a unique index is over its fields alone
                    order = ix.fields if ix.unique else ix.fields + (spec.key,)
                    fields = ", ".join(_name(f) for f in order)
                    unique = "UNIQUE " if ix.unique else ""
                    db.execute(f"CREATE {unique}INDEX IF NOT EXISTS {_name(table + '.' + index)} "
                               f"ON {_name(table)} ({fields})")
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            db.execute(f"PRAGMA user_version={VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _version(self):
        return self.db.execute("SELECT value FROM _meta WHERE key='version'").fetchone()[0]

    async def read(self, queries):
        try:
            self.db.execute("BEGIN")
            try:
                return self._version(), [self._query(q) for q in queries]
            finally:
                self.db.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"{self.name}: reading failed ({e})") from None

    async def write(self, ops, version):
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if self._version() != version:
                    db.execute("ROLLBACK")
                    return False
                for op in ops:
                    self._apply(op)
                db.execute("UPDATE _meta SET value=? WHERE key='version'", (version + 1,))
                db.execute("COMMIT")
                return True
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"{self.name}: writing failed, nothing was written ({e})") from None

    def _apply(self, op):
        table = op["table"]
        spec = TABLES[table]
        if op["op"] == "delete":
            self.db.execute(f"DELETE FROM {_name(table)} WHERE {_name(spec.key)}=?", (op["key"],))
            return
        row = op["row"]
        columns = spec.columns()
        names = ", ".join(_name(c) for c in columns)
        marks = ", ".join("?" * (len(columns) + 1))
        sql = f"INSERT INTO {_name(table)} ({names}, row) VALUES ({marks})"
        if op["op"] == "put":
            update = ", ".join(f"{_name(c)}=excluded.{_name(c)}" for c in columns[1:] + ["row"])
            sql += f" ON CONFLICT({_name(spec.key)}) DO UPDATE SET {update}"
        self.db.execute(sql, [row.get(c) for c in columns] + [_dumps(row)])

    def _query(self, q):
        table = q["table"]
        spec = TABLES[table]
        t, key = _name(table), _name(spec.key)
        kind = q["q"]
        if kind == "last":
            hit = self.db.execute(f"SELECT {key} FROM {t} ORDER BY {key} DESC LIMIT 1").fetchone()
            return hit[0] if hit else None
        if kind == "get":
            found = {}
            keys = q["keys"]
            for start in range(0, len(keys), CHUNK):
                part = keys[start:start + CHUNK]
                sql = f"SELECT {key}, row FROM {t} WHERE {key} IN ({', '.join('?' * len(part))})"
                found.update(self.db.execute(sql, part).fetchall())
            return [json.loads(found[k]) if k in found else None for k in keys]
        if kind == "get_by":
            fields = spec.indexes[q["index"]].fields
            sql = f"SELECT row FROM {t} WHERE " + " AND ".join(f"{_name(f)}=?" for f in fields)
            sql += f" ORDER BY {key} LIMIT 1"
            out = []
            for value in q["values"]:
                hit = self.db.execute(sql, value).fetchone()
                out.append(json.loads(hit[0]) if hit else None)
            return out
        fields = spec.indexes[q["index"]].fields if q.get("index") else ()
        prefix = q.get("prefix") or []
        where = [f"{_name(f)}=?" for f in fields[:len(prefix)]]
        args = list(prefix)
        if kind == "count":
            sql = f"SELECT count(*) FROM {t}" + (" WHERE " + " AND ".join(where) if where else "")
            return self.db.execute(sql, args).fetchone()[0]
        if q.get("after") is not None:
            where.append(f"{key}>?")
            args.append(q["after"])
        sql = f"SELECT row FROM {t}" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY " + ", ".join(_name(f) for f in fields + (spec.key,))
        if q.get("limit") is not None:
            sql += " LIMIT ?"
            args.append(q["limit"])
        rows = [json.loads(r[0]) for r in self.db.execute(sql, args)]
        if q.get("fields") is not None:
            rows = [{f: r.get(f) for f in q["fields"]} for r in rows]
        return rows

    async def acknowledge_loss(self):
        """Nothing to dismiss: `lost` is always None here."""

    def close(self):
        self.db.close()
